"""An attacher's view of a job's stream: durable replay, then the live tail.

:func:`~django_gearattach.attachment.attach` keeps one :class:`StreamCursor` per call:
the run and seq of the last chunk it gave out. It gives out

* first, the durable chunks after the caller's position (``after=``), read from the
  record when it has any (a job that never streamed costs no query);
* then each live chunk gearmand relays, once its signature verifies
  (:func:`~django_gearattach.streams.decode_packet`; a chunk that does not is dropped
  and logged), deduplicated by ``(run, seq)``. A chunk that skips seqs (it was sent
  before the attacher joined, and not yet kept when the replay read) has the missing
  ones read from the record first, waiting for the worker's next batch if need be;
* chunks sent before the attacher joined that were still in the worker's buffer when
  the replay read the record, and that no live chunk follows (the task
  waits): read again from the record a little after the join (:data:`RECHECKS`);
* before the outcome, the chunks the record holds that did not come live (the worker
  keeps every chunk before it records the outcome).

A chunk of a newer run than the one given out so far (a rerun after a killed worker,
a retry, a follow-up) comes after a ``restart`` event: never spliced onto the old
run's. A chunk of an older run (a run that lost its claim, still sending before it
knows) is dropped.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from asgiref.sync import sync_to_async

from . import streams
from .models import Job

if TYPE_CHECKING:
    from .attachment import JobEvent

logger = logging.getLogger("django_gearattach.streams")

#: Seconds an attacher waits for missing chunks to be kept before it gives up on them.
GAP_PATIENCE = 5.0
#: Seconds after reading an active record at which an attacher reads its stream again.
RECHECKS = (2.5 * streams.FLUSH_INTERVAL, 15 * streams.FLUSH_INTERVAL)


class StreamCursor:
    """The position of one attacher in a job's stream."""

    def __init__(
        self,
        function: str,
        key: str,
        after: int | str | tuple[int, int] | None,
        make: Callable[..., JobEvent],
    ) -> None:
        self.function = function
        self.key = key
        held = streams.position(after)
        #: The run given out so far (None: the current one, whatever it is) and its seq.
        self.run: int | None = held[0] if held is not None else 0
        self.seq = held[1] if held is not None else 0
        self.pk: Any = None
        self._checks: list[float] = []
        self._make = make  # JobEvent, passed in: attachment imports this module

    # -- the record ----------------------------------------------------------------------
    def _held(self) -> tuple[int | None, int]:
        return self.run, self.seq

    def needs_read(self, record: Job) -> bool:
        """Whether :meth:`from_record` has anything to read for ``record``."""
        if {"stream_run", "stream_seq"} & record.get_deferred_fields():
            return True  # a record loaded without them (.only()): read them
        current, restart, start = streams.plan(record.stream_run, record.stream_seq, self._held())
        return current is not None and (restart or start < record.stream_seq)

    def from_record(self, record: Job) -> list[JobEvent]:
        """The events that bring this attacher up to the chunks ``record`` keeps."""
        self.pk = record.pk
        if {"stream_run", "stream_seq"} & record.get_deferred_fields():
            record = Job.objects.only("status", "stream_run", "stream_seq").get(pk=record.pk)
        if record.is_active:  # it may have streamed (or start to) chunks not kept yet
            now = time.monotonic()
            self._checks = [now + delay for delay in RECHECKS]
        if not self.needs_read(record):
            if self.run is None and record.stream_run:
                self.run = record.stream_run  # after=N: seq N of the current run
            return []
        found = streams.replay(record.pk, record.stream_run, record.stream_seq, self._held())
        return self._take(found.run, found.restart, found.chunks)

    async def afrom_record(self, record: Job) -> list[JobEvent]:
        if not self.needs_read(record):
            return self.from_record(record)  # no query
        return await sync_to_async(self.from_record)(record)

    def _take(self, run: int | None, restart: bool, chunks: list[streams.Chunk]) -> list[JobEvent]:
        events = []
        if run is not None and run != self.run:
            if self.run is None:  # after=N: seq N of this run
                self.run = run
            else:
                if restart or (self.run and run > self.run):
                    events.append(self._make("restart", run=run))
                self.run, self.seq = run, 0
        for chunk in chunks:
            if chunk.seq > self.seq:
                events.append(self._make("chunk", run=chunk.run, seq=chunk.seq, data=chunk.data))
                self.seq = chunk.seq
        return events

    def wait(self, wait: float | None) -> float | None:
        """``wait`` (seconds, None: forever), shortened to the next read of the record."""
        if not self._checks:
            return wait
        until = max(self._checks[0] - time.monotonic(), 0.0)
        return until if wait is None else min(wait, until)

    def due(self) -> bool:
        """Whether to read the record's stream again now (see :data:`RECHECKS`)."""
        now = time.monotonic()
        if not self._checks or self._checks[0] > now:
            return False
        self._checks = [at for at in self._checks if at > now]
        return True

    def recheck(self) -> list[JobEvent]:
        record = (
            Job.objects.filter(function=self.function, key=self.key)
            .only("status", "stream_run", "stream_seq")
            .first()
        )
        checks = self._checks
        events = [] if record is None else self.from_record(record)
        self._checks = checks
        return events

    async def arecheck(self) -> list[JobEvent]:
        return await sync_to_async(self.recheck)()

    # -- the live tail -------------------------------------------------------------------
    def _accept(self, raw: bytes) -> tuple[list[JobEvent], streams.Chunk | None]:
        """The events for a live packet that need no query, and the chunk when seqs
        before it are missing (to read from the record)."""
        chunk = streams.decode_packet(self.function, self.key, raw)
        if chunk is None:
            return [], None
        events: list[JobEvent] = []
        if self.run is None or chunk.run > self.run:
            # The attacher shows another run's chunks (or held some: after=N).
            if self.run or (self.run is None and self.seq):
                events.append(self._make("restart", run=chunk.run))
            self.run, self.seq = chunk.run, 0
        elif chunk.run < self.run or chunk.seq <= self.seq:
            return events, None  # an older run's, or given out already
        self._checks = []  # a live chunk: whatever came before it is read on a gap
        if chunk.seq > self.seq + 1:
            return events, chunk
        events += self._take(chunk.run, False, [chunk])
        return events, None

    def live(self, raw: bytes) -> list[JobEvent]:
        events, gap = self._accept(raw)
        if gap is not None:
            events += self._take(gap.run, False, [*self._fill(gap), gap])
        return events

    async def alive(self, raw: bytes) -> list[JobEvent]:
        events, gap = self._accept(raw)
        if gap is not None:
            missing = await self._afill(gap)
            events += self._take(gap.run, False, [*missing, gap])
        return events

    def _missing(self, gap: streams.Chunk) -> list[streams.Chunk] | None:
        if self.pk is None:
            self.pk = (
                Job.objects.filter(function=self.function, key=self.key)
                .values_list("pk", flat=True)
                .first()
            )
            if self.pk is None:
                return []
        found = streams.chunks_between(self.pk, gap.run, self.seq, gap.seq - 1)
        return found if len(found) == gap.seq - 1 - self.seq else None

    def _give_up(self, gap: streams.Chunk) -> list[streams.Chunk]:
        logger.warning(
            "job %s[%s]: stream chunks %d:%d to %d:%d were not kept within %ss; given out "
            "without them",
            self.function,
            self.key,
            gap.run,
            self.seq + 1,
            gap.run,
            gap.seq - 1,
            GAP_PATIENCE,
        )
        return []

    def _fill(self, gap: streams.Chunk) -> list[streams.Chunk]:
        deadline = time.monotonic() + GAP_PATIENCE
        while True:
            found = self._missing(gap)
            if found is not None:
                return found
            if time.monotonic() > deadline:
                return self._give_up(gap)
            time.sleep(streams.FLUSH_INTERVAL / 4)

    async def _afill(self, gap: streams.Chunk) -> list[streams.Chunk]:
        deadline = time.monotonic() + GAP_PATIENCE
        while True:
            found = await sync_to_async(self._missing)(gap)
            if found is not None:
                return found
            if time.monotonic() > deadline:
                return self._give_up(gap)
            await asyncio.sleep(streams.FLUSH_INTERVAL / 4)
