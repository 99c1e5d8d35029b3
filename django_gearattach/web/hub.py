"""The fan-out hub: one attachment per job per process, shared by every browser watching it.

Each event loop (an ASGI process has one) gets one :class:`Hub`. The first subscriber
to a job starts a :class:`JobFeed` that follows the job with
:func:`~django_gearattach.attachment.aattach`: a finished job is answered from its
record, and an active one is joined once, in the foreground, on the loop's shared
gearmand connection: gearmand pushes its start, progress and end. That attachment
stays on the connection until the job ends, so no closed tab can make gearmand drop a
queued job. Every message is encoded to JSON once and handed to all subscribers. A
newcomer first gets the latest start, status and data (from the feed, or from the
record when the feed is new), then the live messages.

A job's stream (its ``chunk`` and ``restart`` messages) is relayed the same way, but a
feed keeps only its latest chunks: each subscriber's
:class:`~django_gearattach.web.replay.Resumer` replays, from the feed or from the
database, the chunks after the position its browser holds, then the live ones, with no
gap and no repeat (see :mod:`~django_gearattach.web.replay`).

A feed outlives its last subscriber by :attr:`Hub.linger` seconds, so that a
reconnecting socket or the next long-poll request finds it still attached.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import itertools
import logging
import weakref
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

from django.conf import settings

from .. import records
from ..attachment import aattach
from ..batching import Batcher
from ..conf import conf
from ..exceptions import JobNotFound
from ..models import Job
from ..payload import shown
from .messages import (
    BROKEN,
    MISSING,
    Message,
    message_for,
    outcome_message,
    restart_message,
    snapshot,
)
from .positions import START, Position
from .replay import Resumer, Tail

if TYPE_CHECKING:
    from ..tracing.attaching import Waiter

logger = logging.getLogger("django_gearattach.web.hub")

#: Internal message types: not sent to browsers as such (the consumer closes with 4404
#: or 1011, the HTTP views answer 404 or 503).

_feed_ids = itertools.count(1)


def _load_many(targets: list[tuple[str, str]]) -> list[Job | BaseException | None]:
    records.drop_broken_connections()  # the hub's thread keeps its connection
    return list(records.load(targets))


_load: Batcher[tuple[str, str], Job | None] = Batcher(_load_many)


class JobFeed:
    """One job followed for every subscriber in this process."""

    def __init__(
        self,
        hub: Hub,
        function: str,
        key: str,
        record: Job | None = None,
        start: Position = START,
    ) -> None:
        self.hub = hub
        self.function = function
        self.key = key
        self.id = next(_feed_ids)
        self.seq = 0
        self.latest: dict[str, Message] = {}
        #: The stream: the feed relays the chunks after ``start`` and keeps the latest.
        self.start = start
        self.tail = Tail(start)
        self._restart: Message | None = None
        #: The job's record once the feed has it (the subscribers' spans link to its trace).
        self.record = record
        #: Each subscriber's delivery callback, called once per message, in order.
        self.subscribers: set[Callable[[Message], None]] = set()
        # A context of its own, not the first subscriber's request's: the feed
        # outlives that request, and its database reads must not go to the request's
        # thread (retired by streams.release_request_resources, or gone at its end).
        self.task = asyncio.get_running_loop().create_task(
            self._follow(record),
            name=f"gearattach hub {function}[{key}]",
            context=contextvars.Context(),
        )
        self._idle: asyncio.TimerHandle | None = None

    @property
    def done(self) -> bool:
        return any(m.final for m in self.latest.values())

    def encode(self, payload: dict[str, Any]) -> Message:
        """``payload`` as a message of this feed (not published: for one subscriber)."""
        return Message.encoded(payload, self.seq)

    def restart(self, run: int) -> Message:
        """The ``restart`` message of run ``run``, encoded once for every subscriber."""
        if self._restart is None or self._restart.payload["run"] != run:
            self._restart = self.encode(restart_message(run))
        return self._restart

    def publish(self, payload: dict[str, Any]) -> None:
        self.seq += 1
        message = self.encode(payload)
        kind = message.type
        if kind == "chunk":
            self.tail.add(message)
        elif kind == "restart":
            self.tail.reset((int(payload["run"]), 0))
        elif kind == "superseded":  # a newcomer catches up with the new run only
            self.latest = {}
        elif kind in ("started", "status", "data", "unserved"):
            self.latest[kind] = message
        if kind in ("started", "served"):
            self.latest.pop("unserved", None)  # a newcomer needs no stale notice
        if message.final:
            self.latest["final"] = message
        for deliver in self.subscribers:
            deliver(message)

    def backlog(self) -> list[Message]:
        return sorted(self.latest.values(), key=lambda m: m.seq)

    async def _follow(self, record: Job | None) -> None:
        try:
            if record is None:
                record = await _load((self.function, self.key))
            if record is None:
                raise JobNotFound(self.function, self.key)
            self.record = record
            if record.is_active:
                for payload in snapshot(record):
                    self.publish(payload)
            follow = aattach(record, after=self.start) if self.start != START else aattach(record)
            async for event in follow:
                message = message_for(event, self.function)
                if event.event == "failed" and settings.DEBUG:
                    # Under DEBUG the owner sees the traceback, which only the record has.
                    fresh = await _load((self.function, self.key))
                    if fresh is not None and fresh.is_finished:
                        message = outcome_message(fresh)
                self.publish(message)
        except JobNotFound:
            self.publish({"type": MISSING})
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            logger.warning("following %s[%s] failed: %s", self.function, shown(self.key), exc)
            self.publish({"type": BROKEN, "error": str(exc)})
        finally:
            self.hub._forget(self)

    def subscribe(self, deliver: Callable[[Message], None]) -> None:
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None
        self.subscribers.add(deliver)

    def unsubscribe(self, deliver: Callable[[Message], None]) -> None:
        self.subscribers.discard(deliver)
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
    """Messages for one subscriber: the backlog first, then live ones, until final.

    A list and at most one waiting future, rather than an ``asyncio.Queue`` (three
    deques): a process may hold tens of thousands of these.
    """

    __slots__ = ("_waiter", "feed", "messages")

    def __init__(self, feed: JobFeed, backlog: list[Message]) -> None:
        self.feed = feed
        self.messages: list[Message] = list(backlog)
        self._waiter: asyncio.Future[None] | None = None

    @property
    def feed_id(self) -> int:
        return self.feed.id

    def put(self, message: Message) -> None:
        """The feed's delivery callback."""
        self.messages.append(message)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def get(self, timeout: float | None = None) -> Message | None:
        """The next message; None after ``timeout`` seconds without one."""
        if not self.messages:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                async with asyncio.timeout(timeout):
                    await self._waiter
            except TimeoutError:
                return None
            finally:
                self._waiter = None
        return self.messages.pop(0)

    def pending(self) -> list[Message]:
        """The messages already queued, without waiting."""
        out, self.messages = self.messages, []
        return out

    def __aiter__(self) -> AsyncIterator[Message]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Message]:
        while True:
            message = await self.get()
            assert message is not None
            yield message
            if message.final:
                return


class Hub:
    """The feeds of one event loop. Get it with :func:`get_hub`."""

    #: Seconds a feed stays attached after its last subscriber left.
    linger: float = 5.0

    def __init__(self) -> None:
        self.feeds: dict[tuple[str, str], JobFeed] = {}

    @contextlib.asynccontextmanager
    async def subscribe(
        self,
        function: str,
        key: str,
        *,
        record: Job | None = None,
        after: Position = START,
        summarised: bool = False,
    ) -> AsyncIterator[Subscription]:
        """Follow the job: ``async with hub.subscribe(f, k) as sub: async for m in sub``.

        ``record`` (optional) saves the feed a database read when it is new. ``after``:
        the stream position the subscriber holds (its chunks follow it); a
        ``summarised`` subscriber (a summary token) gets no stream.
        """
        feed = self._feed(function, key, record, after)
        subscription = Subscription(feed, [])
        waiter = _waiter(feed)
        put: Callable[[Message], None] = subscription.put
        if waiter is not None:
            put = waiter.wrap(put)
        resumer = Resumer(feed, put, after, summarised)
        resumer.start(feed.backlog())
        feed.subscribe(resumer)
        try:
            yield subscription
        finally:
            feed.unsubscribe(resumer)
            resumer.close()
            if waiter is not None:
                waiter.leave()

    def listen(
        self,
        function: str,
        key: str,
        deliver: Callable[[Message], None],
        *,
        record: Job | None = None,
        after: Position = START,
        summarised: bool = False,
    ) -> Callable[[], None]:
        """Call ``deliver`` with each message of the job (the backlog first, at once).

        The leanest way to follow a job: no task and no queue per subscriber (the
        websocket consumer uses it). ``deliver`` must not block. Returns the function
        that stops the delivery. ``after`` and ``summarised`` as for :meth:`subscribe`.
        """
        feed = self._feed(function, key, record, after)
        waiter = _waiter(feed)
        if waiter is not None:
            deliver = waiter.wrap(deliver)
        resumer = Resumer(feed, deliver, after, summarised)
        resumer.start(feed.backlog())
        feed.subscribe(resumer)
        stop = functools.partial(_stop, feed, resumer)
        return stop if waiter is None else waiter.stopping(stop)

    def _feed(
        self, function: str, key: str, record: Job | None, after: Position = START
    ) -> JobFeed:
        feed = self.feeds.get((function, key))
        if feed is None or feed.task.done():
            start = after if _kept(record, after) else START
            feed = self.feeds[function, key] = JobFeed(self, function, key, record, start)
        return feed

    def _forget(self, feed: JobFeed) -> None:
        if self.feeds.get((feed.function, feed.key)) is feed:
            del self.feeds[feed.function, feed.key]

    async def record(self, function: str, key: str) -> Job | None:
        """The job's record, read on the hub's thread with the other reads of this turn."""
        return await _load((function, key))

    def stats(self) -> dict[str, int]:
        return {
            "feeds": len(self.feeds),
            "subscribers": sum(len(c.subscribers) for c in self.feeds.values()),
        }

    async def aclose(self) -> None:
        """Stop following every job (tests, shutdown)."""
        feeds, self.feeds = list(self.feeds.values()), {}
        for feed in feeds:
            if feed._idle is not None:
                feed._idle.cancel()
            feed.task.cancel()
        for feed in feeds:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await feed.task


def _stop(feed: JobFeed, resumer: Resumer) -> None:
    feed.unsubscribe(resumer)
    resumer.close()


def _kept(record: Job | None, position: Position) -> bool:
    """Whether the record says ``position`` names a chunk it keeps (a new feed may then
    start there: chunks before it are read by those who need them). A position from
    anywhere else (a client's guess) starts the feed at the stream's start."""
    if record is None or position == START:
        return False
    if {"stream_run", "stream_seq"} & record.get_deferred_fields():
        return False  # not loaded: reading them here would block the event loop
    return position[0] == record.stream_run and position[1] <= record.stream_seq


def _waiter(feed: JobFeed) -> Waiter | None:
    """A subscriber's span, with GEARATTACH["TRACING"] (tracing/attaching.py)."""
    if not conf.TRACING:
        return None
    from ..tracing.attaching import Waiter

    return Waiter(feed)


_hubs: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Hub] = weakref.WeakKeyDictionary()


def get_hub() -> Hub:
    """The hub of the running event loop."""
    loop = asyncio.get_running_loop()
    hub = _hubs.get(loop)
    if hub is None:
        hub = _hubs[loop] = Hub()
    return hub
