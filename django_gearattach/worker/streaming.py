"""One run's stream (:mod:`django_gearattach.streams`), on the worker's side.

Each chunk is sent to gearmand at once through the run's claim (nothing after the
claim is lost), and buffered. The buffer is written in batches: every
:data:`~django_gearattach.streams.FLUSH_INTERVAL` seconds or :data:`FLUSH_SIZE`
chunks, by a thread of the run's own (so the task never waits on the database to
stream), and what is left when the run ends, before its outcome is written (an
attacher that finds the outcome finds every chunk). A batch is one transaction: the
record's ``stream_seq`` (and a renewed lease), conditioned on the run's claim, then
the chunks; the run's first batch also deletes the chunks of the runs before it. A
batch that matches no record (the claim is lost) writes nothing, and the run sends
nothing more.

In immediate mode (no threads of the worker's own) the batches are written by the
task's thread, when a chunk finds the buffer due.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Any

from django.db import DatabaseError, connections, router, transaction

from .. import records, streams
from ..gearman.protocol import Command
from ..models import Job, JobChunk, Status
from . import fencing

if TYPE_CHECKING:
    from .claim import Claim

logger = logging.getLogger("django_gearattach.worker.streaming")

#: Chunks that make a batch due at once (see also streams.FLUSH_INTERVAL).
FLUSH_SIZE = 500


class RunStream:
    """The stream of the run that holds ``claim``."""

    def __init__(
        self,
        claim: Claim,
        *,
        background: bool = True,
        keeper: fencing.LeaseKeeper | None = None,
    ) -> None:
        self.claim = claim
        self.background = background
        self.keeper = keeper
        #: The record's pk and this run's number, read with the first chunk.
        self.job_id: Any = None
        self.run: int | None = None
        self.seq = 0
        self.written = 0  # the last seq in the database
        self._buffer: list[tuple[int, bytes]] = []
        self._oldest = 0.0
        self._cond = threading.Condition()
        self._send_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._closing = False

    # -- the task's side -----------------------------------------------------------------
    def append(self, value: Any) -> bool:
        """Send a chunk and buffer it; False (and nothing sent) once the claim is lost."""
        data = streams.encode_data(value)
        if self.run is None and not self.start():
            return False
        assert self.run is not None
        # Seqs are handed out and sent in one order, whatever thread streams.
        with self._send_lock:
            self.seq += 1
            seq = self.seq
            packet = streams.encode_packet(
                self.claim.function, self.claim.key, self.run, seq, data
            )
            if not self.claim.send(Command.WORK_DATA, packet):
                return False
            with self._cond:
                first = not self._buffer
                if first:
                    self._oldest = time.monotonic()
                self._buffer.append((seq, data))
                due = self._due()
                if (first or due) and self.background:
                    self._cond.notify()  # the writer sets its timer, or writes now
        if due and not self.background:
            self._flush()
        return True

    def start(self) -> bool:
        """Read the record's pk and this run's number (one SELECT, once per run); False
        when the run lost its claim. The first :meth:`append` calls it if nobody did."""
        if self.run is not None:
            return True
        row = (
            Job.objects.filter(
                function=self.claim.function,
                key=self.claim.key,
                status=Status.RUNNING,
                execution=self.claim.execution,
            )
            .values_list("pk", "stream_run")
            .first()
        )
        if row is None:
            self.claim.settle(0)
            return False
        self.job_id, self.run = row
        if self.background:
            self._thread = threading.Thread(
                target=self._loop, name="gearattach-stream", daemon=True
            )
            self._thread.start()
        return True

    def close(self, *, write: bool = True) -> None:
        """The run ends: write what is buffered (in this thread), before its outcome;
        with ``write`` False, drop it."""
        thread = self._thread
        if thread is not None:
            with self._cond:
                self._closing = True
                self._cond.notify()
            thread.join()
            self._thread = None
        if self._buffer and write:
            self._flush()
        self._buffer = []

    # -- batches ---------------------------------------------------------------------------
    def _due(self) -> bool:
        return bool(self._buffer) and (
            len(self._buffer) >= FLUSH_SIZE
            or time.monotonic() - self._oldest >= streams.FLUSH_INTERVAL
        )

    def _loop(self) -> None:
        try:
            while True:
                with self._cond:
                    while not self._closing and not self._due():
                        wait = None
                        if self._buffer:
                            wait = max(
                                self._oldest + streams.FLUSH_INTERVAL - time.monotonic(), 0.001
                            )
                        self._cond.wait(wait)
                    if self._closing:
                        return
                try:
                    self._flush()
                except DatabaseError as exc:  # kept in the buffer: the next batch retries
                    logger.warning(
                        "job %s: stream chunks not written yet: %s", self.claim.name, exc
                    )
                    records.drop_broken_connections()
                    time.sleep(streams.FLUSH_INTERVAL)
        finally:
            connections.close_all()  # this thread's own

    def _flush(self) -> None:
        with self._cond:
            batch, self._buffer = self._buffer, []
        if not batch or not self.claim.held:
            return
        try:
            written = self.claim.settle(self._write(batch))
        except BaseException:
            with self._cond:  # back in front, for the next try
                self._buffer[:0] = batch
                self._oldest = time.monotonic()
            raise
        if written:
            self.written = batch[-1][0]
            if self.keeper is not None:
                self.keeper.renewed()

    def _write(self, batch: list[tuple[int, bytes]]) -> int:
        """One batch in one transaction; the record's row count (0: the claim is lost)."""
        assert self.run is not None
        first = self.written == 0
        alias = router.db_for_write(JobChunk)
        with transaction.atomic(using=alias):
            count = records.update(
                self.claim.function,
                self.claim.key,
                {"stream_seq": batch[-1][0], "lease_until": fencing.lease_end()},
                statuses=(Status.RUNNING.value,),
                execution=self.claim.execution,
            )
            if not count:
                return 0
            if first:  # the runs before this one: no longer read
                JobChunk.objects.using(alias).filter(job_id=self.job_id, run__lt=self.run).delete()
            JobChunk.objects.using(alias).bulk_create(
                [
                    JobChunk(job_id=self.job_id, run=self.run, seq=seq, data=data.decode())
                    for seq, data in batch
                ]
            )
        return count
