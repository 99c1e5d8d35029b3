"""A job's stream for each browser: what it missed, then the live chunks, no gap, no repeat.

The hub's feed (:class:`~django_gearattach.web.hub.JobFeed`) relays the chunks of one
job to every subscriber in the process, and keeps only a bounded :class:`Tail` of the
latest ones (at most :data:`TAIL_CHUNKS` chunks and :data:`TAIL_BYTES` of JSON): a
stream of any length costs a process the same. Each subscriber has a :class:`Resumer`
that knows the last chunk its browser holds (its resume position, ``"R:N"``):

* a newcomer whose position the tail covers gets the tail's chunks after it, at once;
* any other gets the durable chunks after its position
  (:func:`django_gearattach.streams.read`), then the tail's, then what arrived live
  meanwhile. The chunks a worker has sent but not written yet (writes are batched)
  are in the tail; if they are not, the resumer reads again until they are written;
* a chunk at or before the position is dropped, so none arrives twice; a chunk after a
  gap starts such a read; a chunk of a newer run is preceded by a ``restart`` message
  when the browser holds chunks of an older one (runs are never spliced).

The job's outcome reaches a subscriber after the chunks it is owed, never before.
A summary token (the admin's) gets no chunks at all: like a result, a stream is the
job's owner's.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from .. import records, streams
from ..batching import Batcher
from ..payload import shown
from .messages import BROKEN, MISSING, chunk_message, restart_message
from .positions import START, Position

if TYPE_CHECKING:
    from .hub import JobFeed
    from .messages import Message

logger = logging.getLogger("django_gearattach.web.replay")

#: The most chunks, and bytes of their JSON, a feed keeps for newcomers.
TAIL_CHUNKS = 1024
TAIL_BYTES = 1 << 20
#: How often, and how far apart, a resumer reads the durable chunks while the ones it
#: misses are not written yet (the worker writes in batches: well under a second).
READ_ATTEMPTS = 40
READ_PAUSE = 0.05
#: Message types of a stream.
STREAM_TYPES = frozenset({"chunk", "restart"})


def _read_many(items: list[tuple[Any, Position]]) -> list[streams.Replay | BaseException]:
    records.drop_broken_connections()  # the hub's thread keeps its connection
    out: list[streams.Replay | BaseException] = []
    for pk, after in items:
        try:
            out.append(streams.read(pk, after))
        except Exception as exc:  # one failed read fails its resumer only
            out.append(exc)
    return out


_read: Batcher[tuple[Any, Position], streams.Replay] = Batcher(_read_many)


async def stored(pk: Any, position: Position) -> list[dict[str, Any]]:
    """The messages of a finished job's stream after ``position``, from the database."""
    found = await _read((pk, position))
    out = [restart_message(found.run)] if found.restart and found.run is not None else []
    out.extend(chunk_message(c.run, c.seq, c.data) for c in found.chunks)
    return out


def _place(message: Message) -> Position:
    return int(message.payload["run"]), int(message.payload["seq"])


class Tail:
    """The latest chunks a feed relayed, of the current run only, bounded."""

    __slots__ = ("base", "chunks", "head", "size")

    def __init__(self, start: Position) -> None:
        #: The position just before the first chunk kept, and the last chunk relayed.
        self.base = self.head = start
        self.chunks: deque[Message] = deque()
        self.size = 0

    def add(self, message: Message) -> None:
        run, seq = _place(message)
        if run != self.head[0]:  # the feed's first chunk of a run
            self.reset((run, seq - 1))
        self.chunks.append(message)
        self.size += len(message.text)
        self.head = (run, seq)
        while len(self.chunks) > TAIL_CHUNKS or self.size > TAIL_BYTES:
            old = self.chunks.popleft()
            self.size -= len(old.text)
            self.base = _place(old)

    def reset(self, position: Position) -> None:
        """Drop every chunk kept: the stream goes on from ``position`` (a new run)."""
        self.chunks.clear()
        self.size = 0
        self.base = self.head = position

    def after(self, position: Position) -> list[Message] | None:
        """The chunks kept after ``position``; None when they may not be all there are."""
        run, seq = position
        base_run, base_seq = self.base
        if run == base_run and seq >= base_seq:
            return [m for m in self.chunks if _place(m)[1] > seq]
        if run < base_run and base_seq == 0:  # the current run from its start
            return list(self.chunks)
        if run > base_run:  # ahead of this feed: it relays the chunks it catches up with
            return []
        return None


class Resumer:
    """One subscriber's delivery callback, keeping its stream in order (see module doc)."""

    __slots__ = ("deliver", "feed", "held", "position", "summarised", "task")

    def __init__(
        self,
        feed: JobFeed,
        deliver: Callable[[Message], None],
        position: Position = START,
        summarised: bool = False,
    ) -> None:
        self.feed = feed
        self.deliver = deliver
        self.position = position
        self.summarised = summarised
        #: Messages held back while the chunks before them are read (None: none held).
        self.held: list[Message] | None = None
        self.task: asyncio.Task[None] | None = None

    def __call__(self, message: Message) -> None:
        """The feed's delivery callback."""
        if self.held is not None:
            self.held.append(message)
        else:
            self._relay([message])

    def start(self, backlog: list[Message]) -> None:
        """Catch the newcomer up: the feed's latest state, its chunks, then the outcome."""
        final = [m for m in backlog if m.final]
        for message in backlog:
            if not message.final:
                self.deliver(message)
        chunks = [] if self.summarised else self.feed.tail.after(self.position)
        if chunks is None:
            self._hold(final)
        else:
            self._relay([*chunks, *final])

    def close(self) -> None:
        task, self.task = self.task, None
        if task is not None:
            task.cancel()

    def _relay(self, messages: Iterable[Message]) -> bool:
        """Pass on ``messages`` in order; at a gap, hold the rest and read what is missing."""
        pending = list(messages)
        for index, message in enumerate(pending):
            if not self._pass(message):
                self._hold(pending[index:])
                return False
        return True

    def _pass(self, message: Message) -> bool:
        """Deliver ``message`` unless the browser holds it; False at a gap before it."""
        kind = message.type
        if kind not in STREAM_TYPES:
            self.deliver(message)
            return True
        if self.summarised:
            return True
        held_run, held_seq = self.position
        if kind == "restart":
            run = int(message.payload["run"])
            if run > held_run:
                self.position = (run, 0)
                self.deliver(message)
            return True
        run, seq = _place(message)
        if run < held_run or (run == held_run and seq <= held_seq):
            return True  # held already
        if run > held_run:
            if seq != 1:
                return False
            if held_run > 0:  # what the browser shows is an older run's: discard it
                self.deliver(self.feed.restart(run))
        elif seq != held_seq + 1:
            return False
        self.position = (run, seq)
        self.deliver(message)
        return True

    def _hold(self, messages: list[Message]) -> None:
        if self.held is None:
            self.held = []
        self.held[:0] = messages
        if self.task is None:
            self.task = asyncio.get_running_loop().create_task(self._catch_up())

    async def _catch_up(self) -> None:
        feed = self.feed
        try:
            for attempt in range(READ_ATTEMPTS):
                if attempt:
                    await asyncio.sleep(READ_PAUSE)
                record = feed.record or await feed.hub.record(feed.function, feed.key)
                if record is None:
                    self.held = None
                    self.deliver(feed.encode({"type": MISSING}))
                    return
                replay = await _read((record.pk, self.position))
                held, self.held = self.held or [], None
                found: list[Message] = []
                if replay.restart and replay.run is not None:
                    found.append(feed.restart(replay.run))
                found.extend(
                    feed.encode(chunk_message(c.run, c.seq, c.data)) for c in replay.chunks
                )
                if not self._relay(found):
                    self.held = [*(self.held or []), *held]  # not written yet: read again
                    continue
                tail = feed.tail.after(self.position)
                if tail is None:  # the chunks between are in neither place yet
                    self.held = held
                    continue
                if self._relay([*tail, *held]):
                    return
            logger.warning(
                "%s[%s]: chunks after %s:%s stay missing; the subscriber reconnects",
                feed.function,
                shown(feed.key),
                *self.position,
            )
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            logger.warning(
                "reading %s[%s]'s stream failed: %s", feed.function, shown(feed.key), exc
            )
        finally:
            self.task = None
        self.held = None
        self.deliver(feed.encode({"type": BROKEN, "error": "stream incomplete"}))
