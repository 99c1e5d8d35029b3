"""One run of an ``async def`` task on the worker's event loop, as a sync run goes.

The run's bookkeeping is the sync worker's own (:class:`~.answering.Answering`: the
running mark that takes the claim, the outcome committed through the claim before
gearmand hears of it, the hand-over to a run that waits to follow), called in the
runner's database threads so that it never blocks the loop. The task's body runs in
an asyncio task of its own, which the runner's watch (:mod:`.asyncwatch`) cancels at
the soft time limit or on a cancel request, and gives up on at the hard limit.

Reports from the body (``job.progress``, ``job.data``, ``job.warning``) leave at once
on the job's connection from the loop's thread, only while the run holds its claim;
the record gets them at most every ``PROGRESS_WRITE_INTERVAL``, written in a thread
(:class:`AsyncReporter`). A report never follows the job's final packet: that one is
sent by a thread once the claim has ended, through the loop, after every report sent
before; a report made after the claim ended is not sent.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .. import signals
from ..cancelling import CANCELLED_RUNNING_ERROR
from ..exceptions import JobCancelled
from ..gearman.protocol import Command
from ..payload import dumps
from ..timelimits import SoftTimeLimitExceeded, TimeLimits, soft_message
from . import fencing
from .claim import Claim
from .reporting import Reporter, off_loop
from .streaming import RunStream

#: Runs a blocking call in one of the runner's database threads.
InThread = Callable[..., "asyncio.Future[Any]"]


class AsyncReporter(Reporter):
    """A :class:`~.reporting.Reporter` that never blocks the event loop."""

    def __init__(self, claim: Claim, interval: float, in_thread: InThread) -> None:
        super().__init__(claim, interval, None)
        self._in_thread = in_thread
        #: The record write in flight (at most one per run).
        self.writing: asyncio.Future[Any] | None = None

    def _send(self, command: Command, *args: bytes | str | int) -> None:
        # From the loop's thread, without the claim's lock (a thread may hold it while
        # it writes): the state is read once; see the module's docstring for the order.
        if self.claim.held:
            self.claim.job.send(command, *args)

    def progress(self, numerator: int, denominator: int) -> None:
        self._send(Command.WORK_STATUS, numerator, denominator)
        self._save(progress_numerator=numerator, progress_denominator=denominator)
        if signals.job_progress.receivers:
            self._in_thread(
                signals.send_progress,
                None,
                self.claim.function,
                self.claim.key,
                numerator,
                denominator,
            )

    def data(self, value: Any) -> None:
        raw = dumps(value)
        self._send(Command.WORK_DATA, raw)
        self._save(data=json.loads(raw))

    def warning(self, message: str) -> None:
        self._send(Command.WORK_WARNING, message)

    def stream(self, chunk: Any) -> None:
        """A chunk leaves from the loop (in order with the run's other packets); the
        run's first chunk reads the record in a thread, and a thread of the stream's
        own writes the batches."""
        stream = self._run_stream()
        if stream.run is None and not off_loop(stream.start):
            return
        stream.append(chunk)

    async def astream(self, chunk: Any) -> None:
        stream = self._run_stream()
        if stream.run is None and not await self._in_thread(stream.start):
            return
        stream.append(chunk)

    def _run_stream(self) -> RunStream:
        if self._stream is None:
            self._stream = RunStream(self.claim, background=True)
        return self._stream

    def _save(self, **fields: Any) -> None:
        self._unsaved.update(fields)
        now = time.monotonic()
        if self.writing is not None or now - self._last_write < self.interval:
            return  # the write in flight, or the outcome's, takes these
        self._last_write = now
        fields = self._take() | {"lease_until": fencing.lease_end()}
        self.writing = self._in_thread(self.claim.write, fields)
        self.writing.add_done_callback(self._written)

    def _written(self, future: asyncio.Future[Any]) -> None:
        self.writing = None
        future.exception()  # a failed write is not fatal: the outcome carries the reports

    async def settled(self) -> None:
        """Wait for the write in flight (its reports are then not the outcome's)."""
        if self.writing is not None:
            await asyncio.gather(self.writing, return_exceptions=True)
        if self._stream is not None:
            # The stream's last batch, before the outcome (written only while the run
            # holds its claim): the writer thread is joined in a thread, not on the loop.
            await self._in_thread(self.close)


@dataclass(eq=False)
class AsyncRun:
    """A running async job as the runner's watch sees it (limits, cancel, lease)."""

    claim: Claim
    context: Any  # the JobContext
    limits: TimeLimits
    started: float
    body: asyncio.Task[Any] | None = None
    #: Done when the watch ended the run itself (hard limit, end of a cancel's grace).
    stopped: asyncio.Future[str] = field(default_factory=lambda: _loop().create_future())
    #: Why the body was cancelled: "soft" or "cancel" ("" while it was not).
    cancelled_for: str = ""
    cancel_at: float | None = None
    soft_done: bool = False
    #: The watch is ending the run (hard limit, end of a cancel's grace).
    ending: bool = False

    @property
    def soft_at(self) -> float | None:
        return None if self.limits.soft is None else self.started + self.limits.soft

    @property
    def hard_at(self) -> float | None:
        return None if self.limits.hard is None else self.started + self.limits.hard

    def cancel_body(self, why: str) -> None:
        if self.body is not None and not self.body.done():
            self.cancelled_for = self.cancelled_for or why
            self.body.cancel(why)

    def stop(self, how: str) -> None:
        if not self.stopped.done():
            self.stopped.set_result(how)
        if self.body is not None and not self.body.done():
            self.body.cancel(how)


def _loop() -> asyncio.AbstractEventLoop:
    return asyncio.get_running_loop()


def cancelled_as(run: AsyncRun, cancelled: asyncio.CancelledError) -> Exception:
    """The error a body that ended by its cancellation is recorded with."""
    error: Exception
    if run.cancelled_for == "soft" and run.limits.soft is not None:
        error = SoftTimeLimitExceeded(soft_message(run.limits.soft))
    elif run.cancelled_for == "cancel" or run.context.cancel_requested:
        error = JobCancelled(CANCELLED_RUNNING_ERROR.split(": ", 1)[1])
    else:
        error = JobCancelled("the task's coroutine was cancelled")
    error.__cause__ = cancelled
    return error
