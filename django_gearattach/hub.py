"""The fan-out hub: one attachment per job per process, shared by every browser watching it.

Each event loop (an ASGI process has one) gets one :class:`Hub`. The first subscriber
to a job starts a :class:`Channel` that follows the job with
:func:`~django_gearattach.attachment.aattach`: a finished job is answered from its
record, and an active one is joined once, in the foreground, on the loop's shared
gearmand connection: gearmand pushes its start, progress and end. That attachment
stays on the connection until the job ends, so no closed tab can make gearmand drop a
queued job. Every message is encoded to JSON once and handed to all subscribers. A
newcomer first gets the latest start, status and data (from the channel, or from the
record when the channel is new), then the live messages.

A channel outlives its last subscriber by :attr:`Hub.linger` seconds, so that a
reconnecting socket or the next long-poll request finds it still attached.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import weakref
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from django.core.serializers.json import DjangoJSONEncoder

from . import records
from .attachment import aattach
from .batching import Batcher
from .exceptions import JobNotFound
from .models import Job
from .wire import TERMINAL, message_for, snapshot

logger = logging.getLogger("django_gearattach.hub")

#: Internal message types: not sent to browsers as such (the consumer closes with 4404
#: or 1011, the HTTP views answer 404 or 503).
MISSING = "missing"
BROKEN = "broken"

_channel_ids = itertools.count(1)


@dataclass(frozen=True, slots=True)
class Message:
    """One message for browsers, encoded once. ``seq`` orders a channel's messages."""

    payload: dict[str, Any]
    text: str
    seq: int

    @property
    def type(self) -> str:
        return str(self.payload["type"])

    @property
    def final(self) -> bool:
        return self.type in TERMINAL or self.type in (MISSING, BROKEN)


def _load_many(targets: list[tuple[str, str]]) -> list[Job | BaseException | None]:
    return list(records.load(targets))


_load: Batcher[tuple[str, str], Job | None] = Batcher(_load_many)


class Channel:
    """One job followed for every subscriber in this process."""

    def __init__(self, hub: Hub, function: str, key: str, record: Job | None = None) -> None:
        self.hub = hub
        self.function = function
        self.key = key
        self.id = next(_channel_ids)
        self.seq = 0
        self.latest: dict[str, Message] = {}
        self.subscribers: set[asyncio.Queue[Message]] = set()
        self.task = asyncio.get_running_loop().create_task(
            self._follow(record), name=f"gearattach hub {function}[{key}]"
        )
        self._idle: asyncio.TimerHandle | None = None

    @property
    def done(self) -> bool:
        return any(m.final for m in self.latest.values())

    def publish(self, payload: dict[str, Any]) -> None:
        self.seq += 1
        text = json.dumps(payload, cls=DjangoJSONEncoder, separators=(",", ":"))
        message = Message(payload, text, self.seq)
        kind = message.type
        if kind in ("started", "status", "data"):
            self.latest[kind] = message
        elif message.final:
            self.latest["final"] = message
        for queue in self.subscribers:
            queue.put_nowait(message)

    def backlog(self) -> list[Message]:
        return sorted(self.latest.values(), key=lambda m: m.seq)

    async def _follow(self, record: Job | None) -> None:
        try:
            if record is None:
                record = await _load((self.function, self.key))
            if record is None:
                raise JobNotFound(self.function, self.key)
            if record.is_active:
                for payload in snapshot(record):
                    self.publish(payload)
            async for event in aattach(record):
                self.publish(message_for(event, self.function))
        except JobNotFound:
            self.publish({"type": MISSING})
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            logger.warning("following %s[%s] failed: %s", self.function, self.key, exc)
            self.publish({"type": BROKEN, "error": str(exc)})
        finally:
            self.hub._forget(self)

    def subscribe(self, queue: asyncio.Queue[Message]) -> None:
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None
        self.subscribers.add(queue)

    def unsubscribe(self, queue: asyncio.Queue[Message]) -> None:
        self.subscribers.discard(queue)
        if not self.subscribers and not self.task.done():
            if self.hub.linger > 0:
                loop = asyncio.get_running_loop()
                self._idle = loop.call_later(self.hub.linger, self._stop_if_idle)
            else:
                self._stop_if_idle()

    def _stop_if_idle(self) -> None:
        self._idle = None
        if not self.subscribers:
            # Safe at any point: the gearmand attachment stays on the shared connection
            # until the job ends, whether it is queued or running.
            self.task.cancel()
            self.hub._forget(self)


class Subscription:
    """Messages for one subscriber: the backlog first, then live ones, until final."""

    def __init__(self, channel: Channel, backlog: list[Message]) -> None:
        self.channel = channel
        self.queue: asyncio.Queue[Message] = asyncio.Queue()
        for message in backlog:
            self.queue.put_nowait(message)

    @property
    def channel_id(self) -> int:
        return self.channel.id

    async def get(self, timeout: float | None = None) -> Message | None:
        """The next message; None after ``timeout`` seconds without one."""
        if timeout is None:
            return await self.queue.get()
        try:
            async with asyncio.timeout(timeout):
                return await self.queue.get()
        except TimeoutError:
            return None

    def pending(self) -> list[Message]:
        """The messages already queued, without waiting."""
        out = []
        while not self.queue.empty():
            out.append(self.queue.get_nowait())
        return out

    def __aiter__(self) -> AsyncIterator[Message]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Message]:
        while True:
            message = await self.queue.get()
            yield message
            if message.final:
                return


class Hub:
    """The channels of one event loop. Get it with :func:`get_hub`."""

    #: Seconds a channel stays attached after its last subscriber left.
    linger: float = 5.0

    def __init__(self) -> None:
        self.channels: dict[tuple[str, str], Channel] = {}

    @contextlib.asynccontextmanager
    async def subscribe(
        self, function: str, key: str, *, record: Job | None = None
    ) -> AsyncIterator[Subscription]:
        """Follow the job: ``async with hub.subscribe(f, k) as sub: async for m in sub``.

        ``record`` (optional) saves the channel a database read when it is new.
        """
        channel = self.channels.get((function, key))
        if channel is None or channel.task.done():
            channel = self.channels[function, key] = Channel(self, function, key, record)
        subscription = Subscription(channel, channel.backlog())
        channel.subscribe(subscription.queue)
        try:
            yield subscription
        finally:
            channel.unsubscribe(subscription.queue)

    def _forget(self, channel: Channel) -> None:
        if self.channels.get((channel.function, channel.key)) is channel:
            del self.channels[channel.function, channel.key]

    def stats(self) -> dict[str, int]:
        return {
            "channels": len(self.channels),
            "subscribers": sum(len(c.subscribers) for c in self.channels.values()),
        }

    async def aclose(self) -> None:
        """Stop following every job (tests, shutdown)."""
        channels, self.channels = list(self.channels.values()), {}
        for channel in channels:
            if channel._idle is not None:
                channel._idle.cancel()
            channel.task.cancel()
        for channel in channels:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await channel.task


_hubs: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Hub] = weakref.WeakKeyDictionary()


def get_hub() -> Hub:
    """The hub of the running event loop."""
    loop = asyncio.get_running_loop()
    hub = _hubs.get(loop)
    if hub is None:
        hub = _hubs[loop] = Hub()
    return hub
