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
import json
import logging
import os
import socket
import threading
import time
import traceback
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from django.db import DatabaseError

from .. import records, runs, signals
from ..clients import get_client
from ..conf import conf
from ..exceptions import BadPayload, ClaimLost, GearattachError
from ..gearman.errors import GearmanError
from ..gearman.protocol import Command
from ..gearman.rendezvous import Address
from ..gearman.worker import Assignment, WorkerPool
from ..models import Job, Status
from ..payload import ATTACH_MARKER, decode_document, dumps, is_attach_marker, shown
from ..ratelimits import Throttles
from ..scheduling import pending_epoch
from ..submission import send_successor
from ..tasks import JobContext, Rescheduled, Task
from . import fencing
from .claim import ENDED, OUTCOME_PATIENCE, Claim
from .recovery import Sweeper
from .reporting import Reporter
from .starting import GiveBack, NotHere, Starter
from .sweeping import SweepThread
from .watchdog import Watchdog

if TYPE_CHECKING:
    from ..tracing.run import RunTracer

__all__ = ["OUTCOME_PATIENCE", "Worker"]

logger = logging.getLogger("django_gearattach.worker.loop")


class Worker:
    """Runs jobs for ``tasks`` from every server until :meth:`stop` is called.

    ``inline`` (immediate mode) runs jobs handed to :meth:`run_now` in the calling
    thread with no thread of its own: no lease keeper (no other copy of the job can
    exist), no watchdog (time limits and cancels are not enforced, as in Celery's eager
    mode), no rate or concurrency rights.
    """

    def __init__(
        self, tasks: Iterable[Task[Any, Any]], servers: list[Address], *, inline: bool = False
    ) -> None:
        self.tasks = {t.name: t for t in tasks}
        if not self.tasks:
            raise GearattachError("no tasks to run: register some with @task first")
        self.pool = WorkerPool(servers, self.tasks, timeout=conf.TIMEOUT)
        self._stop = threading.Event()
        # Running marks and the claims of this worker's runs (starting.py, claim.py).
        self.starter = Starter(socket.gethostname()[:255], os.getpid(), self._stop)
        self._may_grab_ahead = False  # set per job by run()
        # The job grabbed ahead by the last one, and whether its running mark is committed.
        self._ahead: tuple[Assignment, bool] | None = None
        self.jobs_done = 0
        self.jobs_folded = 0  # running marks committed with the previous job's outcome
        self.sweeper = Sweeper()
        self.inline = inline
        self.keeper = fencing.LeaseKeeper()  # its thread starts with the first job held
        self.watchdog = Watchdog()  # time limits and cancel requests (watchdog.py)
        self.throttles = None if inline else Throttles.for_tasks(self.tasks.values())
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
        try:
            # A job grabbed ahead is run even after stop(): its attempt is counted.
            while self._ahead is not None or not self._stop.is_set():
                # Whatever failed last (a claim of a right, a wait), reconnect next time.
                records.drop_broken_connections()
                if self._ahead is not None:
                    (job, marked), self._ahead = self._ahead, None
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
        if is_attach_marker(job.data):
            record = records.get(job.function, key)
            if record is None:
                return self._send_error(job, f"JobNotFound: no job {job.function}[{key}]")
            if record.is_finished:
                return self._answer_stored(job, record)
            epoch = (
                pending_epoch(record.scheduled_for) if record.status == Status.SCHEDULED else None
            )
            if epoch is not None:
                return self._put_back(job, key, epoch)
            if record.arguments is None and fencing.holds_live_claim(record):
                record = self.starter.await_claim(job.function, key, give_back=True)
                if record.is_finished:
                    return self._answer_stored(job, record)
            if record.arguments is None:
                message = "the job was lost and its arguments are unknown"
                return self._not_here(
                    job, self.starter.end_unclaimed(job, key, Status.LOST, message)
                )
            payload: bytes | dict[str, Any] = record.arguments
        else:
            payload = job.data
        document: dict[str, Any] = {}
        try:
            if isinstance(payload, bytes):  # decoded once: the tracing reads its "trace"
                document = decode_document(payload)
                args, kwargs = document.get("args", []), document.get("kwargs", {})
            else:
                args, kwargs = _split(payload)
            problem = None
        except BadPayload as exc:
            args, kwargs, problem = [], {}, str(exc)
        arguments = None if problem else {"args": args, "kwargs": kwargs}
        # A job grabbed ahead was marked running with the last job's outcome.
        started = self.starter.claims[job.function, key] if marked else None
        claim = started or self.starter.start(job, key, arguments)
        if isinstance(claim, NotHere):
            return self._not_here(job, claim)
        if problem is not None:
            if not self._finish(claim, Status.FAILED, {"error": f"BadPayload: {problem}"}):
                return self._not_concluded(claim)
            if claim.successor is not None:
                return self._hand_on(claim, Status.FAILED)
            return self._send_error(job, f"BadPayload: {problem}", claim)
        if not isinstance(payload, bytes):
            # Latest wins: a waiting run's arguments may be replaced in the record until
            # it is marked running (runs.py); the ones it runs are read once it is.
            payload = self._arguments_now(job, key, payload)
            args, kwargs = _split(payload)
            return self._run(claim, args, kwargs, payload)
        return self._run(claim, args, kwargs, document)

    def _arguments_now(
        self, job: Assignment, key: str, arguments: dict[str, Any]
    ) -> dict[str, Any]:
        record = records.get(job.function, key, ("arguments",))
        if record is None or not isinstance(record.arguments, dict):
            return arguments
        return record.arguments

    def _put_back(self, job: Assignment, key: str, epoch: int) -> str:
        """A marker for a scheduled job, before its time: give it back for its time.

        An attacher's marker (or a resubmission) makes gearmand hand the job out at
        once; the record says when it is due, so it never runs early. The marker ends
        first (gearmand must forget it before the key can be scheduled again), and its
        attachers, seeing a record that still waits, follow the scheduled job.
        """
        job.send(Command.WORK_FAIL)
        try:
            get_client().submit_epoch(job.server, job.function, job.unique, epoch, ATTACH_MARKER)
        except GearmanError as exc:
            # The record still says scheduled: the recovery sweep resubmits it.
            logger.error("job %s[%s] not scheduled again: %s", job.function, shown(key), exc)
        return "scheduled again for its time"

    def _not_here(self, job: Assignment, why: NotHere) -> str:
        """Answer a copy of the job that does not run here (see :class:`NotHere`)."""
        if why.record is not None:
            return self._answer_stored(job, why.record)
        if why.error:
            return self._send_error(job, why.error)
        return self._follow(job, job.unique.decode("utf-8", "replace"))

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
            error = f"{type(exc).__name__}: {exc}"
            fields = {
                "error": error,
                "traceback": traceback.format_exc(),
                "exception_module": type(exc).__module__,
                "exception_qualname": type(exc).__qualname__,
            }
            # A task that stops by raising once it is cancelled ends cancelled.
            status = Status.CANCELLED if context.cancel_requested else Status.FAILED
            if status == Status.FAILED:
                # The worker's log is where a developer looks first: the whole traceback.
                logger.error("job %s[%s] raised %s", job.function, key, error, exc_info=exc)
            if not self._conclude(claim, status, fields | reporter.pending()):
                return self._not_concluded(claim)
            _call_outcome_callbacks(context, status, exc)
            if claim.successor is not None:
                return self._hand_on(claim, status)
            return self._send_error(job, error, claim)
        result = json.loads(raw)
        if not self._conclude(claim, Status.COMPLETE, {"result": result} | reporter.pending()):
            return self._not_concluded(claim)
        _call_outcome_callbacks(context, Status.COMPLETE, result)
        if claim.successor is not None:
            return self._hand_on(claim, Status.COMPLETE, raw)
        self._send_final(job, Command.WORK_COMPLETE, raw, claim=claim)
        return "complete"

    def _hand_on(self, claim: Claim, status: Status, raw: bytes = b"") -> str:
        """The run ended with a run waiting to follow it, which the record now is
        (:mod:`~django_gearattach.runs`). The end goes to gearmand at once (a replaced
        run's as a failure: its attachers read the record and follow the new run), then
        the new run, once gearmand has forgotten this one."""
        successor = claim.successor
        assert successor is not None
        if status == Status.COMPLETE and not runs.supersedes(successor):
            claim.send_final(Command.WORK_COMPLETE, raw)
        else:
            claim.send_final(Command.WORK_FAIL)
        send_successor(successor, after=claim.job.server)
        return (
            f"{status.value}, handed over to run {successor.run_number} ({successor.run_reason})"
        )

    def _rescheduled(self, claim: Claim, again: Rescheduled) -> str:
        """End a run whose task recorded its next run itself (a retry): no outcome."""
        # Sent now, not with the next request: the next run waits for gearmand to forget
        # this one.
        claim.send_final(Command.WORK_FAIL)
        try:
            again.resend(claim.job.server)
        except Exception:
            # The record says scheduled: attaching to it (or the recovery sweep) revives it.
            logger.exception("job %s: its next run was not submitted", claim.name)
        return "rescheduled"

    def _not_concluded(self, claim: Claim) -> str:
        """The run's outcome was not written: the watchdog ended the run first, or the
        run lost its claim."""
        if claim.state == ENDED:
            return f"ended by the watchdog first ({claim.ended_by})"
        return self._answer_when_done(claim.job, claim.key)

    def _answer_when_done(self, job: Assignment, key: str) -> str:
        """This run lost its claim (its lease expired, another copy took over): its
        outcome is not recorded; the copy that holds the claim gives the outcome."""
        logger.error(
            "job %s[%s]: the run lost its claim (lease expired) before it finished; "
            "its outcome is dropped for that of the run that holds the claim",
            job.function,
            key,
        )
        return self._follow(job, key)

    def _follow(self, job: Assignment, key: str) -> str:
        """Give this copy of the job the outcome of the run that holds the record.

        It waits while another run holds a live claim. A record that is not finished
        then (that run retried, or died and another copy will run the job) gets no
        outcome from here: the copy ends in gearmand with a bare WORK_FAIL and nothing
        written, and attachers, finding the record active, follow the job on.
        """
        record = self.starter.await_claim(job.function, key, give_back=False)
        if record.is_finished:
            return self._answer_stored(job, record)
        self._send_final(job, Command.WORK_FAIL)
        return f"left to the run that holds the record ({record.status})"

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

    def _finish(self, claim: Claim, status: Status, fields: dict[str, Any]) -> bool:
        """Record a run's outcome, only while the run holds its claim."""
        written = claim.end(status, fields)
        if written and claim.successor is None and signals.job_finished.receivers:
            signals.send_finished(claim.function, claim.key)
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

    def _answer_stored(self, job: Assignment, record: Job) -> str:
        if record.status == Status.COMPLETE:
            self._send_final(job, Command.WORK_COMPLETE, dumps(record.result))
            return "answered from the record (complete)"
        self._send_error(job, record.failure_text)
        return f"answered from the record ({record.status})"

    def _send_error(self, job: Assignment, message: str, claim: Claim | None = None) -> str:
        # A plain WORK_FAIL, not WORK_EXCEPTION: gearmand 1.1.20 turns WORK_EXCEPTION
        # into a WORK_FAIL with a stray NUL after the handle for every client that did
        # not ask for exceptions, which hangs the gearman CLI and crashes pygearman.
        # The message is in the record (committed before this), where attach reads it.
        logger.debug("job %s failed: %s", job.function, message)
        self._send_final(job, Command.WORK_FAIL, claim=claim)
        return "failed"


def _run_tracer(watchdog: Watchdog) -> RunTracer:
    """Imported here: without GEARATTACH["TRACING"], nothing of OpenTelemetry is."""
    from ..tracing.run import RunTracer

    return RunTracer(watchdog)


def _call_outcome_callbacks(context: JobContext, status: str, result: Any) -> None:
    for callback in context.outcome_callbacks:
        try:
            callback(status, result)
        except Exception:
            logger.exception(
                "job %s[%s]: an outcome callback failed", context.function, context.key
            )


def _split(arguments: dict[str, Any]) -> tuple[list[Any], dict[str, Any]]:
    args, kwargs = arguments.get("args", []), arguments.get("kwargs", {})
    if not isinstance(args, list) or not isinstance(kwargs, dict):
        raise BadPayload("the stored arguments are malformed")
    return args, kwargs
