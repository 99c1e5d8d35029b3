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
from collections import deque
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from django.db import DatabaseError, IntegrityError
from django.db.models import F
from django.utils import timezone

from .. import records, runs, signals
from ..clients import get_client
from ..conf import conf
from ..exceptions import BadPayload, ClaimLost, GearattachError
from ..gearman.errors import GearmanError
from ..gearman.protocol import Command
from ..gearman.rendezvous import Address
from ..gearman.worker import Assignment, WorkerPool
from ..models import ACTIVE, Job, Status, ended, started
from ..payload import ATTACH_MARKER, decode_arguments, dumps, is_attach_marker
from ..ratelimits import Throttles
from ..scheduling import pending_epoch
from ..submission import send_successor
from ..tasks import JobContext, Rescheduled, Task
from . import fencing
from .claim import ENDED, OUTCOME_PATIENCE, Claim, patiently
from .recovery import Sweeper
from .reporting import Reporter
from .watchdog import Watchdog

if TYPE_CHECKING:
    from ..tracing.run import RunTracer

__all__ = ["OUTCOME_PATIENCE", "Worker"]

logger = logging.getLogger("django_gearattach.worker.loop")


class _GiveBack(Exception):
    """The worker is stopping while the job waits here: hand it back to gearmand unrun."""


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
        self.host = socket.gethostname()[:255]
        self.pid = os.getpid()
        self._stop = threading.Event()
        self._may_grab_ahead = False  # set per job by run()
        # The job grabbed ahead by the last one, and whether its running mark is committed.
        self._ahead: tuple[Assignment, bool] | None = None
        self.jobs_done = 0
        self.jobs_folded = 0  # running marks committed with the previous job's outcome
        self.sweeper = Sweeper()
        self.inline = inline
        self.keeper = fencing.LeaseKeeper()  # its thread starts with the first job held
        # The claim of each job this worker marked running (claim.py).
        self._claims: dict[tuple[str, str], Claim] = {}
        # Claims of runs this worker abandoned (not running, whatever their lease says).
        self._abandoned: deque[str] = deque(maxlen=64)
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
    def stopping(self) -> bool:
        return self._stop.is_set()

    def run(self, max_jobs: int | None = None) -> None:
        self.pid = os.getpid()
        folds = records.combines_updates()
        try:
            # A job grabbed ahead is run even after stop(): its attempt is counted.
            while self._ahead is not None or not self._stop.is_set():
                # Whatever failed last (a claim of a right, a sweep), reconnect next time.
                records.drop_broken_connections()
                self.sweeper.run_if_due()
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

    # -- one job -----------------------------------------------------------------------
    def handle(self, job: Assignment, *, marked: bool = False) -> None:
        """Run one job; ``marked`` when its running mark is already committed."""
        key = job.unique.decode("utf-8", "replace")
        began = time.monotonic()
        try:
            outcome = self._handle(job, key, marked)
        except (GearmanError, DatabaseError, _GiveBack) as exc:
            claim = self._claims.pop((job.function, key), None)
            if claim is not None:  # its claim may be live: this worker may take it over
                self._abandoned.append(claim.execution)
            # Nothing was reported: dropping the connection makes gearmand requeue the job
            # (and any job grabbed ahead on the same connection).
            if isinstance(exc, _GiveBack):
                logger.info("job %s[%s] handed back unrun: the worker stops", job.function, key)
            else:
                logger.error("job %s[%s] abandoned: %s", job.function, key, exc)
            if self._ahead is not None and self._ahead[0].connection is job.connection:
                ahead, marked = self._ahead
                self._ahead = None  # gearmand requeues it with this job
                if marked:
                    self._unmark(ahead)  # while gearmand still holds it for us
            self.pool.report_failure(job)
            return
        self._claims.pop((job.function, key), None)
        logger.info(
            "job %s[%s] %s in %.3fs (server %s)",
            job.function,
            key,
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
            self._claims.pop((job.function, key), None)

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
                record = self._await_claim(job.function, key, give_back=True)
                if record.is_finished:
                    return self._answer_stored(job, record)
            if record.arguments is None:
                message = "the job was lost and its arguments are unknown"
                return self._end_unclaimed(job, key, Status.LOST, message)
            payload: bytes | dict[str, Any] = record.arguments
        else:
            payload = job.data
        try:
            args, kwargs = (
                decode_arguments(payload) if isinstance(payload, bytes) else _split(payload)
            )
            problem = None
        except BadPayload as exc:
            args, kwargs, problem = [], {}, str(exc)
        arguments = None if problem else {"args": args, "kwargs": kwargs}
        verdict = None if marked else self._start(job, key, arguments)
        if verdict is not None:
            return verdict
        claim = self._claims[job.function, key]
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
            logger.error("job %s[%s] not scheduled again: %s", job.function, key, exc)
        return "scheduled again for its time"

    def _running_fields(self, job: Assignment, key: str) -> dict[str, Any]:
        """The running mark, with a new claim (execution id and lease) for this run."""
        execution = fencing.new_execution()
        self._claims[job.function, key] = Claim(job, key, execution)
        fields = started(
            handle=job.handle.decode(errors="replace"),
            server=str(job.server),
            worker_host=self.host,
            worker_pid=self.pid,
        )
        return fields | fencing.claim_fields(execution, fields["started_at"])

    def _running_mark(self, job: Assignment, key: str, fields: dict[str, Any]) -> records.Update:
        """The common case of :meth:`_start`: an active record below MAX_ATTEMPTS, which
        no live claim holds (the claim rides on this UPDATE: see fencing.py)."""
        return records.Update(
            job.function,
            key,
            fields,
            statuses=ACTIVE,
            attempts_below=conf.MAX_ATTEMPTS,
            increment_attempts=True,
            unclaimed_at=fields["started_at"],
        )

    def _holder_is_gone(self, record: Job) -> bool:
        """Whether the run holding the claim is known not to run any more."""
        return record.execution in self._abandoned or fencing.holder_is_gone(record, self.host)

    def _take_over(self, job: Assignment, key: str, record: Job) -> bool:
        """Claim a job whose claim a dead process on this host holds."""
        fields = self._running_fields(job, key)
        taken = records.update(
            job.function,
            key,
            fields,
            statuses=(Status.RUNNING.value,),
            attempts_below=conf.MAX_ATTEMPTS,
            increment_attempts=True,
            execution=record.execution,
        )
        if taken:
            logger.warning(
                "job %s[%s]: its last run (pid %s) is gone; taking over its claim",
                job.function,
                key,
                record.worker_pid,
            )
        return bool(taken)

    def _await_claim(self, function: str, key: str, *, give_back: bool) -> Job:
        """Wait, reading the record, until the live claim on it ends; return the record.

        Another copy of this job runs elsewhere: its outcome is this copy's outcome.
        When the worker is asked to stop meanwhile, ``give_back`` hands this copy back
        to gearmand unrun (:class:`_GiveBack`); otherwise the record is returned as it
        is (the caller ends this copy without running it).
        """
        logger.warning(
            "job %s[%s] runs elsewhere (a live claim): waiting for its outcome", function, key
        )
        while True:
            self._stop.wait(fencing.wait_interval())
            record = records.get(function, key)
            if record is None:
                raise DatabaseError(f"the record of {function}[{key}] is gone")
            if not fencing.holds_live_claim(record) or self._holder_is_gone(record):
                return record
            if self._stop.is_set():
                if give_back:
                    raise _GiveBack
                return record

    def _start(self, job: Assignment, key: str, arguments: dict[str, Any] | None) -> str | None:
        """Mark the job running; return an outcome instead when it must not run."""
        tries = 0
        while tries < 3:
            if self._stop.is_set():
                raise _GiveBack  # a stopping worker starts no job
            fields = self._running_fields(job, key)
            if records.update_together(self._running_mark(job, key, fields)) == [1]:
                return None
            self._claims.pop((job.function, key), None)
            record = records.get(job.function, key)
            if record is not None and fencing.holds_live_claim(record):
                if self._holder_is_gone(record) and self._take_over(job, key, record):
                    return None
                self._claims.pop((job.function, key), None)
                record = self._await_claim(job.function, key, give_back=True)
                if not record.is_finished:
                    continue  # the claim expired: claim it (not counted as a try)
            tries += 1
            if record is None:
                # Submitted by another client (pygearman, the gearman CLI): record it now.
                fields = self._running_fields(job, key)
                try:
                    Job.objects.create(
                        function=job.function, key=key, attempts=1, arguments=arguments, **fields
                    )
                except IntegrityError:
                    self._claims.pop((job.function, key), None)
                    continue  # a submitter recorded it meanwhile: take the UPDATE path
                return None
            if record.is_finished:
                return self._answer_stored(job, record)
            if record.attempts < conf.MAX_ATTEMPTS:
                continue  # its record changed between our UPDATE and SELECT: try again
            message = (
                f"gave up after {record.attempts} attempts: the job stopped its worker each "
                "time (GEARATTACH['MAX_ATTEMPTS'])"
            )
            return self._end_unclaimed(job, key, Status.FAILED, message)
        raise DatabaseError(f"could not record job {job.function}[{key}]")

    def _end_unclaimed(self, job: Assignment, key: str, status: Status, message: str) -> str:
        """End a job that no run holds (no live claim) without running it.

        Conditioned on that: a run that claimed the record meanwhile gives the outcome.
        """
        outcome = records.Update(
            job.function,
            key,
            ended(status, message),
            statuses=ACTIVE,
            unclaimed_at=timezone.now(),
        )
        if not patiently(lambda: records.update_together(outcome)[0], f"{job.function}[{key}]"):
            return self._follow(job, key)
        if signals.job_finished.receivers:
            signals.send_finished(job.function, key)
        return self._send_error(job, message)

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
        record = self._await_claim(job.function, key, give_back=False)
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
            lambda: self._running_mark(ahead, ahead_key, self._running_fields(ahead, ahead_key)),
        )
        self._ahead = (ahead, marked == 1)
        self.jobs_folded += marked
        if written and claim.successor is None and signals.job_finished.receivers:
            signals.send_finished(job.function, key)
        return written

    def _unmark(self, job: Assignment) -> None:
        """Undo the running mark of a job grabbed ahead that gearmand requeues unrun.

        Its attempt was counted but it never ran: left counted, a job near
        MAX_ATTEMPTS could be failed without running again. Only this worker's own
        mark is undone, never one that the job's next worker has written since.
        """
        key = job.unique.decode("utf-8", "replace")
        claim = self._claims.pop((job.function, key), None)
        try:
            Job.objects.filter(
                function=job.function,
                key=key,
                status=Status.RUNNING,
                handle=job.handle.decode(errors="replace"),
                worker_host=self.host,
                worker_pid=self.pid,
                execution=claim.execution if claim is not None else "",
                attempts__gt=0,
            ).requeue(
                attempts=F("attempts") - 1,
                started_at=None,
                worker_host="",
                worker_pid=None,
                execution="",
            )
        except DatabaseError as exc:
            logger.error(
                "job %s[%s] requeued; its attempt stays counted: %s", job.function, key, exc
            )

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
