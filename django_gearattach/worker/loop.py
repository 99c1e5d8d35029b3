"""The worker loop: run assigned jobs and keep their records.

When a job starts, after its running mark is committed, the worker sends an empty
``WORK_DATA``: gearmand tells attached clients nothing at that moment, and this is
how they hear it.

Per job the normal path costs two statements: one UPDATE that marks the job
running (and counts the attempt), one UPDATE with the outcome. The outcome is
committed BEFORE WORK_COMPLETE/WORK_FAIL is sent, so anyone who sees gearmand
forget the job finds the outcome in the database.

On PostgreSQL, under load, the two go in one statement, so a job costs one round
trip and one commit: before it reports a job, the worker grabs its next one
(without waiting) and commits the outcome of the first together with the running
mark of the second. Each mark is still durable before its job runs, and each
outcome before gearmand hears of it. (SQLite has no round trips to save, and a
longer write transaction only makes the other processes wait for its lock.)
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from django.db import DatabaseError

from .. import records, signals
from ..conf import conf
from ..exceptions import ClaimLost, GearattachError
from ..gearman.errors import GearmanError
from ..gearman.protocol import Command
from ..gearman.rendezvous import Address
from ..gearman.worker import Assignment, WorkerPool
from ..models import Status
from ..payload import dumps, is_attach_marker, shown
from ..ratelimits import Throttles
from ..tasks import JobContext, Rescheduled, Task
from . import fencing
from .answering import Answering
from .asyncrunner import AsyncRunner
from .claim import OUTCOME_PATIENCE, Claim
from .recovery import Sweeper
from .reporting import Reporter
from .starting import GiveBack, Starter
from .sweeping import SweepThread
from .watchdog import Watchdog

if TYPE_CHECKING:
    from ..tracing.run import RunTracer

__all__ = ["OUTCOME_PATIENCE", "Worker"]

logger = logging.getLogger("django_gearattach.worker.loop")


class Worker(Answering):
    """Runs jobs for ``tasks`` from every server until :meth:`stop` is called.

    ``inline`` (immediate mode) runs jobs handed to :meth:`run_now` in the calling
    thread with no thread of its own: no lease keeper (no other copy of the job can
    exist), no watchdog (time limits and cancels are not enforced, as in Celery's eager
    mode), no rate or concurrency rights.

    ``async def`` tasks run on an :class:`~.asyncrunner.AsyncRunner` beside this loop
    (many at once: ``async_concurrency``, default ``GEARATTACH["ASYNC_CONCURRENCY"]``).
    """

    def __init__(
        self,
        tasks: Iterable[Task[Any, Any]],
        servers: list[Address],
        *,
        inline: bool = False,
        async_concurrency: int | None = None,
    ) -> None:
        self.tasks = {t.name: t for t in tasks}
        if not self.tasks:
            raise GearattachError("no tasks to run: register some with @task first")
        sync = [t for t in self.tasks.values() if inline or not t.is_async]
        self.pool = WorkerPool(servers, [t.name for t in sync], timeout=conf.TIMEOUT)
        self._stop = threading.Event()
        # Running marks and the claims of this worker's runs (starting.py, claim.py).
        self.starter = Starter(socket.gethostname()[:255], os.getpid(), self._stop)
        asyncs = [t for t in self.tasks.values() if t not in sync]
        self.asyncs = (
            AsyncRunner(asyncs, servers, self.starter.host, self._stop, async_concurrency)
            if asyncs
            else None
        )
        self._may_grab_ahead = False  # set per job by run()
        # The job grabbed ahead by the last one, and whether its running mark is committed.
        self._ahead: tuple[Assignment, bool] | None = None
        self.jobs_done = 0
        self.jobs_folded = 0  # running marks committed with the previous job's outcome
        self.sweeper = Sweeper()
        self.inline = inline
        self.keeper = fencing.LeaseKeeper()  # its thread starts with the first job held
        self.watchdog = Watchdog()  # time limits and cancel requests (watchdog.py)
        self.throttles = None if inline else Throttles.for_tasks(sync)
        if self.throttles is not None:  # ratelimits.py
            self.throttles.install(self.pool)
            self.watchdog.on_tick = self.throttles.renew
        #: Called after each job; True ends the process after it (``--max-memory-per-child``).
        self.recycle_after: Callable[[], bool] | None = None
        #: The span around each run, with GEARATTACH["TRACING"] (tracing/run.py).
        self.tracing = _run_tracer(self.watchdog) if conf.TRACING else None

    def stop(self) -> None:
        """Finish the current job, then return from :meth:`run`."""
        self._stop.set()

    @property
    def host(self) -> str:
        return self.starter.host

    @property
    def pid(self) -> int:
        return self.starter.pid

    def run(self, max_jobs: int | None = None) -> None:
        self.starter.pid = os.getpid()
        folds = records.combines_updates()
        sweeping = SweepThread(self.sweeper).start()  # recovery never waits for a job
        if self.asyncs is not None:
            self.asyncs.start()
        try:
            # A job grabbed ahead is run even after stop(): its attempt is counted.
            while self._ahead is not None or not self._stop.is_set():
                # Whatever failed last (a claim of a right, a wait), reconnect next time.
                records.drop_broken_connections()
                if self._ahead is not None:
                    (job, marked), self._ahead = self._ahead, None
                elif not self.pool.functions:  # async tasks only: the runner has them
                    self._stop.wait(0.5)
                    continue
                else:
                    grabbed = self.pool.grab(wait=0.5)
                    if grabbed is None:
                        continue
                    job, marked = grabbed, False
                records.drop_broken_connections()
                last = max_jobs is not None and self.jobs_done + 1 >= max_jobs
                self._may_grab_ahead = not last and folds
                self.handle(job, marked=marked)
                self.jobs_done += 1
                if last:
                    break
                if self.recycle_after is not None and self.recycle_after():
                    self.stop()  # a job grabbed ahead still runs first
        finally:
            self._ahead = None  # closing the connections requeues it in gearmand
            self.pool.close()
            self.keeper.close()
            if self.asyncs is not None:
                self._stop.set()
                self.asyncs.join()  # it finishes its runs first
            sweeping.stop()

    # -- one job -----------------------------------------------------------------------
    def handle(self, job: Assignment, *, marked: bool = False) -> None:
        """Run one job; ``marked`` when its running mark is already committed."""
        key = job.unique.decode("utf-8", "replace")
        began = time.monotonic()
        try:
            outcome = self._handle(job, key, marked)
        except (GearmanError, DatabaseError, GiveBack) as exc:
            self.starter.forget(job, key, abandoned=True)
            # Nothing was reported: dropping the connection makes gearmand requeue the job
            # (and any job grabbed ahead on the same connection).
            if isinstance(exc, GiveBack):
                logger.info(
                    "job %s[%s] handed back unrun: the worker stops", job.function, shown(key)
                )
            else:
                logger.error("job %s[%s] abandoned: %s", job.function, shown(key), exc)
            if self._ahead is not None and self._ahead[0].connection is job.connection:
                ahead, marked = self._ahead
                self._ahead = None  # gearmand requeues it with this job
                if marked:
                    self.starter.unmark(ahead)  # while gearmand still holds it for us
            self.pool.report_failure(job)
            return
        self.starter.forget(job, key)
        logger.info(
            "job %s[%s] %s in %.3fs (server %s)",
            job.function,
            shown(key),
            outcome,
            time.monotonic() - began,
            job.server,
        )

    def run_now(self, job: Assignment) -> str:
        """Run one job and keep its record, as :meth:`handle` does, but let database and
        Gearman errors reach the caller instead of requeueing the job. Immediate mode
        runs jobs through this. Returns what became of the job (its log word)."""
        key = job.unique.decode("utf-8", "replace")
        try:
            return self._handle(job, key)
        finally:
            self.starter.forget(job, key)

    def _handle(self, job: Assignment, key: str, marked: bool = False) -> str:
        prepared = self._prepare(job, key, marked)
        if isinstance(prepared, str):
            return prepared
        return self._run(*prepared)

    def _run(
        self,
        claim: Claim,
        args: list[Any],
        kwargs: dict[str, Any],
        payload: bytes | dict[str, Any] = b"",
    ) -> str:
        # The start signal: gearmand tells attached clients nothing when a job starts, so
        # the worker does, once the running mark is committed (attachers that hear it
        # find the record running). An empty WORK_DATA, which no task report can be.
        claim.send(Command.WORK_DATA, b"")
        keeper = None if self.inline else self.keeper
        reporter = Reporter(claim, conf.PROGRESS_WRITE_INTERVAL, keeper)
        context = JobContext(claim.function, claim.key, reporter, claim)
        if keeper is not None:
            keeper.hold(claim)
        try:
            if self.tracing is not None:  # the same run, inside its span
                run = self._run_task
                return self.tracing.run(run, claim, args, kwargs, reporter, context, payload)
            return self._run_task(claim, args, kwargs, reporter, context)
        finally:
            reporter.close()  # a run that ended without its outcome (a retry, a lost claim)
            if keeper is not None:
                keeper.release()

    def _run_task(
        self,
        claim: Claim,
        args: list[Any],
        kwargs: dict[str, Any],
        reporter: Reporter,
        context: JobContext,
    ) -> str:
        job, key = claim.job, claim.key
        if signals.job_started.receivers:
            signals.send_started(job.function, key)
        task = self.tasks[job.function]
        watching = (
            contextlib.nullcontext()
            if self.inline
            else self.watchdog.watching(claim, task.time_limits, context)
        )
        try:
            with watching:
                value = task.run(context, args, kwargs)
            raw = dumps(value)
        except Rescheduled as again:
            return self._rescheduled(claim, again)
        except ClaimLost:
            return self._answer_when_done(job, key)
        except Exception as exc:
            return self._failed(claim, context, reporter, exc)
        return self._completed(claim, context, reporter, raw)

    def _conclude(self, claim: Claim, status: Status, fields: dict[str, Any]) -> bool:
        """Commit a run's outcome, with the running mark of the next job when there is one.

        Return False when the run no longer holds its claim (nothing was written)."""
        job, key = claim.job, claim.key
        grab = self._may_grab_ahead and not self._stop.is_set()
        ahead = self.pool.grab_ahead() if grab else None
        ahead_key = ahead.unique.decode("utf-8", "replace") if ahead is not None else ""
        if (
            ahead is None
            or is_attach_marker(ahead.data)
            # One (function, key) queued on two servers (foreign clients pick servers
            # at random): a statement must not update one row twice.
            or (ahead.function, ahead_key) == (job.function, key)
        ):
            self._ahead = None if ahead is None else (ahead, False)
            return self._finish(claim, status, fields)
        self._ahead = (ahead, False)
        written, marked = claim.end_together(
            status,
            fields,
            lambda: self.starter.running_mark(
                ahead, ahead_key, self.starter.running_fields(ahead, ahead_key)
            ),
        )
        self._ahead = (ahead, marked == 1)
        self.jobs_folded += marked
        if written and claim.successor is None and signals.job_finished.receivers:
            signals.send_finished(job.function, key)
        return written

    def _send_final(
        self, job: Assignment, command: Command, *args: bytes, claim: Claim | None = None
    ) -> None:
        """The job's final packet: a run's (through its claim, once) or, without
        ``claim``, this copy's answer from the record."""
        ahead = self._ahead
        # With nothing held ahead, it leaves with the request for the next job; with the
        # next job marked running already, its start signal follows at once on this
        # connection: one send for both. Otherwise nothing carries it.
        deferred = ahead is None or (ahead[1] and ahead[0].connection is job.connection)
        if claim is not None:
            claim.send_final(command, *args, deferred=deferred)
        elif deferred:
            job.send_last(command, *args)
        else:
            job.send(command, *args)


def _run_tracer(watchdog: Watchdog) -> RunTracer:
    """Imported here: without GEARATTACH["TRACING"], nothing of OpenTelemetry is."""
    from ..tracing.run import RunTracer

    return RunTracer(watchdog)
