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

import json
import logging
import os
import socket
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from django.db import DatabaseError, IntegrityError, InterfaceError, OperationalError
from django.db.models import F

from .. import records, runs, signals
from ..clients import get_client
from ..conf import conf
from ..exceptions import BadPayload, GearattachError
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
from .recovery import Sweeper
from .watchdog import Watchdog

logger = logging.getLogger("django_gearattach.worker.loop")

#: Seconds a worker keeps trying to write a finished run's outcome while the database
#: does not answer (at most ``LEASE`` counted from the write), before it drops the job, which
#: gearmand then requeues: to run again. Holding on keeps a short outage from
#: running a job twice.
OUTCOME_PATIENCE = 10.0

_T = TypeVar("_T")


class _Reporter:
    """Sends a running task's reports to gearmand and (throttled) to its record."""

    def __init__(
        self,
        job: Assignment,
        key: str,
        interval: float,
        execution: str = "",
        keeper: fencing.LeaseKeeper | None = None,
    ) -> None:
        self.job = job
        self.key = key
        self.interval = interval
        self.execution = execution
        self.keeper = keeper
        # The first write comes one interval after the start, not at the first report: a
        # job shorter than that writes its reports with its outcome, in one statement.
        self._last_write = time.monotonic() if interval > 0 else float("-inf")
        self._unsaved: dict[str, Any] = {}
        self._record: Job | None = None  # read only for job_progress receivers

    def progress(self, numerator: int, denominator: int) -> None:
        self.job.send(Command.WORK_STATUS, numerator, denominator)
        self._save(progress_numerator=numerator, progress_denominator=denominator)
        if signals.job_progress.receivers:
            self._record = signals.send_progress(
                self._record, self.job.function, self.key, numerator, denominator
            )

    def data(self, value: Any) -> None:
        raw = dumps(value)
        self.job.send(Command.WORK_DATA, raw)
        self._save(data=json.loads(raw))

    def warning(self, message: str) -> None:
        self.job.send(Command.WORK_WARNING, message)

    def _save(self, **fields: Any) -> None:
        self._unsaved.update(fields)
        now = time.monotonic()
        if now - self._last_write >= self.interval:
            # The heartbeat rides on the progress write: it renews the run's claim.
            fields = self.pending() | {"lease_until": fencing.lease_end()}
            records.update(self.job.function, self.key, fields, execution=self.execution)
            if self.keeper is not None:
                self.keeper.renewed()
            self._last_write = now

    def pending(self) -> dict[str, Any]:
        """Reports not written yet; the final update of the record carries them."""
        fields, self._unsaved = self._unsaved, {}
        return fields


class Worker:
    """Runs jobs for ``tasks`` from every server until :meth:`stop` is called."""

    def __init__(self, tasks: Iterable[Task[Any, Any]], servers: list[Address]) -> None:
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
        self.keeper = fencing.LeaseKeeper()
        # The claim (execution id) of each job this worker marked running.
        self._executions: dict[tuple[str, str], str] = {}
        # Claims of runs this worker abandoned (not running, whatever their lease says).
        self._abandoned: deque[str] = deque(maxlen=64)
        self.watchdog = Watchdog()  # time limits and cancel requests (watchdog.py)
        self.throttles = Throttles.for_tasks(self.tasks.values())  # ratelimits.py
        if self.throttles is not None:
            self.throttles.install(self.pool)
            self.watchdog.on_tick = self.throttles.renew
        #: Called after each job; True ends the process after it (``--max-memory-per-child``).
        self.recycle_after: Callable[[], bool] | None = None

    def stop(self) -> None:
        """Finish the current job, then return from :meth:`run`."""
        self._stop.set()

    def run(self, max_jobs: int | None = None) -> None:
        self.pid = os.getpid()
        folds = records.combines_updates()
        try:
            # A job grabbed ahead is run even after stop(): its attempt is counted.
            while self._ahead is not None or not self._stop.is_set():
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
        except (GearmanError, DatabaseError) as exc:
            abandoned = self._executions.pop((job.function, key), None)
            if abandoned is not None:  # its claim may be live: this worker may take it over
                self._abandoned.append(abandoned)
            # Nothing was reported: dropping the connection makes gearmand requeue the job
            # (and any job grabbed ahead on the same connection).
            logger.error("job %s[%s] abandoned: %s", job.function, key, exc)
            if self._ahead is not None and self._ahead[0].connection is job.connection:
                ahead, marked = self._ahead
                self._ahead = None  # gearmand requeues it with this job
                if marked:
                    self._unmark(ahead)  # while gearmand still holds it for us
            self.pool.report_failure(job)
            return
        self._executions.pop((job.function, key), None)
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
            self._executions.pop((job.function, key), None)

    def _handle(self, job: Assignment, key: str, marked: bool = False) -> str:
        if is_attach_marker(job.data):
            record = records.get(job.function, key)
            if record is None:
                return self._send_error(job, key, f"JobNotFound: no job {job.function}[{key}]")
            if record.is_finished:
                return self._answer_stored(job, key, record)
            epoch = (
                pending_epoch(record.scheduled_for) if record.status == Status.SCHEDULED else None
            )
            if epoch is not None:
                return self._put_back(job, key, epoch)
            if record.arguments is None and fencing.holds_live_claim(record):
                record = self._await_claim(job.function, key)
                if record.is_finished:
                    return self._answer_stored(job, key, record)
            if record.arguments is None:
                message = "the job was lost and its arguments are unknown"
                self._finish(job, key, Status.LOST, error=message)
                return self._send_error(job, key, message)
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
        if problem is None and not isinstance(payload, bytes):
            # Latest wins: a waiting run's arguments may be replaced in the record until
            # it is marked running; the ones it runs are read once it is.
            args, kwargs = self._arguments_now(job, key, args, kwargs)
        if problem is not None:
            execution = self._executions.get((job.function, key))
            self._finish(job, key, Status.FAILED, execution, error=f"BadPayload: {problem}")
            return self._send_error(job, key, f"BadPayload: {problem}")
        return self._run(job, key, args, kwargs)

    def _arguments_now(
        self, job: Assignment, key: str, args: list[Any], kwargs: dict[str, Any]
    ) -> tuple[list[Any], dict[str, Any]]:
        record = records.get(job.function, key, ("arguments",))
        if record is None or record.arguments is None:
            return args, kwargs
        return _split(record.arguments)

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
        execution = self._executions[job.function, key] = fencing.new_execution()
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

    def _await_claim(self, function: str, key: str) -> Job:
        """Wait, reading the record, until the live claim on it ends; return the record.

        Another copy of this job runs elsewhere: its outcome is this copy's outcome.
        """
        logger.warning(
            "job %s[%s] runs elsewhere (a live claim): waiting for its outcome", function, key
        )
        while True:
            time.sleep(fencing.wait_interval())
            record = records.get(function, key)
            if record is None:
                raise DatabaseError(f"the record of {function}[{key}] is gone")
            if not fencing.holds_live_claim(record) or self._holder_is_gone(record):
                return record

    def _start(self, job: Assignment, key: str, arguments: dict[str, Any] | None) -> str | None:
        """Mark the job running; return an outcome instead when it must not run."""
        tries = 0
        while tries < 3:
            fields = self._running_fields(job, key)
            if records.update_together(self._running_mark(job, key, fields)) == [1]:
                return None
            record = records.get(job.function, key)
            if record is not None and fencing.holds_live_claim(record):
                if self._holder_is_gone(record) and self._take_over(job, key, record):
                    return None
                record = self._await_claim(job.function, key)
                if not record.is_finished:
                    continue  # the claim expired: claim it (not counted as a try)
            tries += 1
            if record is None:
                # Submitted by another client (pygearman, the gearman CLI): record it now.
                try:
                    Job.objects.create(
                        function=job.function, key=key, attempts=1, arguments=arguments, **fields
                    )
                except IntegrityError:
                    continue  # a submitter recorded it meanwhile: take the UPDATE path
                return None
            if record.is_finished:
                return self._answer_stored(job, key, record)
            if record.attempts < conf.MAX_ATTEMPTS:
                continue  # its record changed between our UPDATE and SELECT: try again
            message = (
                f"gave up after {record.attempts} attempts: the job stopped its worker each "
                "time (GEARATTACH['MAX_ATTEMPTS'])"
            )
            self._finish(job, key, Status.FAILED, error=message)
            return self._send_error(job, key, message)
        raise DatabaseError(f"could not record job {job.function}[{key}]")

    def _run(self, job: Assignment, key: str, args: list[Any], kwargs: dict[str, Any]) -> str:
        # The start signal: gearmand tells attached clients nothing when a job starts, so
        # the worker does, once the running mark is committed (attachers that hear it
        # find the record running). An empty WORK_DATA, which no task report can be.
        job.send(Command.WORK_DATA, b"")
        execution = self._executions.get((job.function, key), "")
        reporter = _Reporter(job, key, conf.PROGRESS_WRITE_INTERVAL, execution, self.keeper)
        context = JobContext(job.function, key, reporter)
        self.keeper.hold(job.function, key, execution)
        try:
            return self._run_task(job, key, args, kwargs, reporter, context)
        finally:
            self.keeper.release()

    def _run_task(
        self,
        job: Assignment,
        key: str,
        args: list[Any],
        kwargs: dict[str, Any],
        reporter: _Reporter,
        context: JobContext,
    ) -> str:
        if signals.job_started.receivers:
            signals.send_started(job.function, key)
        task = self.tasks[job.function]
        try:
            with self.watchdog.watching(job, key, task.time_limits, context, reporter.execution):
                value = task.run(context, args, kwargs)
            raw = dumps(value)
        except Rescheduled as again:
            return self._rescheduled(job, key, again, reporter.pending())
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
            if not self._conclude(job, key, status, fields := fields | reporter.pending()):
                return self._not_concluded(job, key, status, fields)
            _call_outcome_callbacks(context, status, exc)
            return self._send_error(job, key, error)
        result = json.loads(raw)
        fields = {"result": result} | reporter.pending()
        if not self._conclude(job, key, Status.COMPLETE, fields):
            return self._not_concluded(job, key, Status.COMPLETE, fields, raw)
        _call_outcome_callbacks(context, Status.COMPLETE, result)
        self._send_final(job, Command.WORK_COMPLETE, raw)
        return "complete"

    def _rescheduled(
        self, job: Assignment, key: str, again: Rescheduled, pending: dict[str, Any]
    ) -> str:
        """End a run whose task recorded its next run itself (a retry): no outcome."""
        if pending:
            records.update(job.function, key, pending)
        # Sent now, not with the next request: the next run waits for gearmand to forget
        # this one.
        job.send(Command.WORK_FAIL)
        try:
            again.resend(job.server)
        except Exception:
            # The record says scheduled: attaching to it (or the recovery sweep) revives it.
            logger.exception("job %s[%s]: its next run was not submitted", job.function, key)
        return "rescheduled"

    def _not_concluded(
        self, job: Assignment, key: str, status: Status, fields: dict[str, Any], raw: bytes = b""
    ) -> str:
        """The outcome was not written: a run waits to follow this one (a follow-up or a
        replacement: the record becomes that run's), or this run lost its claim."""
        execution = self._executions.get((job.function, key), "")
        successor = runs.hand_over(job.function, key, execution, status, fields)
        if successor is None:
            return self._answer_when_done(job, key)
        # Sent now, not with the next request: the next run waits for gearmand to forget
        # this one. A replaced run's attachers hear a failure, read the record and follow
        # its successor.
        if status == Status.COMPLETE and not runs.supersedes(successor):
            job.send(Command.WORK_COMPLETE, raw)
        else:
            job.send(Command.WORK_FAIL)
        send_successor(successor, after=job.server)
        return (
            f"{status.value}, handed over to run {successor.run_number} ({successor.run_reason})"
        )

    def _answer_when_done(self, job: Assignment, key: str) -> str:
        """This run lost its claim (its lease expired, another copy took over): its
        outcome is not recorded; the copy that holds the claim gives the outcome."""
        logger.error(
            "job %s[%s]: the run lost its claim (lease expired) before it finished; "
            "its outcome is dropped for that of the run that holds the claim",
            job.function,
            key,
        )
        record = self._await_claim(job.function, key)
        if record.is_finished:
            return self._answer_stored(job, key, record)
        message = "the job's claim was lost and no other run finished it"
        self._finish(job, key, Status.LOST, error=message)
        return self._send_error(job, key, message)

    def _conclude(self, job: Assignment, key: str, status: Status, fields: dict[str, Any]) -> bool:
        """Commit a run's outcome, with the running mark of the next job when there is one.

        Return False when the run no longer holds its claim (nothing was written)."""
        execution = self._executions.get((job.function, key))
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
            return self._finish(job, key, status, execution=execution, no_successor=True, **fields)
        self._ahead = (ahead, False)
        outcome = ended(status) | fields
        written, marked = _patiently(
            lambda: records.update_together(
                records.Update(job.function, key, outcome, execution=execution, no_successor=True),
                self._running_mark(ahead, ahead_key, self._running_fields(ahead, ahead_key)),
            ),
            f"{job.function}[{key}]",
        )
        self._ahead = (ahead, marked == 1)
        self.jobs_folded += marked
        if written and signals.job_finished.receivers:
            signals.send_finished(job.function, key)
        return bool(written)

    def _unmark(self, job: Assignment) -> None:
        """Undo the running mark of a job grabbed ahead that gearmand requeues unrun.

        Its attempt was counted but it never ran: left counted, a job near
        MAX_ATTEMPTS could be failed without running again. Only this worker's own
        mark is undone, never one that the job's next worker has written since.
        """
        key = job.unique.decode("utf-8", "replace")
        try:
            Job.objects.filter(
                function=job.function,
                key=key,
                status=Status.RUNNING,
                handle=job.handle.decode(errors="replace"),
                worker_host=self.host,
                worker_pid=self.pid,
                execution=self._executions.pop((job.function, key), ""),
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

    def _finish(
        self,
        job: Assignment,
        key: str,
        status: Status,
        execution: str | None = None,
        no_successor: bool = False,
        **fields: Any,
    ) -> bool:
        """Record an outcome; with ``execution``, only while that run holds the claim;
        ``no_successor``: only while no run waits to follow it (see runs.py)."""
        outcome = ended(status) | fields
        written = _patiently(
            lambda: records.update(
                job.function, key, outcome, execution=execution, no_successor=no_successor
            ),
            f"{job.function}[{key}]",
        )
        if written and signals.job_finished.receivers:
            signals.send_finished(job.function, key)
        return bool(written)

    def _send_final(self, job: Assignment, command: Command, *args: bytes) -> None:
        ahead = self._ahead
        if ahead is None:
            job.send_last(command, *args)  # leaves with the request for the next job
        elif ahead[1] and ahead[0].connection is job.connection:
            # The next job is marked running already, so its start signal follows at
            # once on this connection: one send for both.
            job.send_last(command, *args)
        else:
            job.send(command, *args)  # the next job is here already: nothing carries it

    def _answer_stored(self, job: Assignment, key: str, record: Job) -> str:
        if record.status == Status.COMPLETE:
            self._send_final(job, Command.WORK_COMPLETE, dumps(record.result))
            return "answered from the record (complete)"
        self._send_error(job, key, record.failure_text)
        return f"answered from the record ({record.status})"

    def _send_error(self, job: Assignment, key: str, message: str) -> str:
        # A plain WORK_FAIL, not WORK_EXCEPTION: gearmand 1.1.20 turns WORK_EXCEPTION
        # into a WORK_FAIL with a stray NUL after the handle for every client that did
        # not ask for exceptions, which hangs the gearman CLI and crashes pygearman.
        # The message is in the record (committed before this), where attach reads it.
        logger.debug("job %s[%s] failed: %s", job.function, key, message)
        self._send_final(job, Command.WORK_FAIL)
        return "failed"


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


def _patiently(write: Callable[[], _T], name: str) -> _T:
    """Run an outcome write, again and again while the database does not answer, for
    up to :data:`OUTCOME_PATIENCE` seconds (the write is conditioned on the run's
    claim, so a late one never overwrites another run's outcome)."""
    deadline = time.monotonic() + min(OUTCOME_PATIENCE, conf.LEASE)
    pause = 0.05
    while True:
        try:
            return write()
        except (OperationalError, InterfaceError) as exc:  # not a bad value: it never passes
            if time.monotonic() + pause > deadline:
                raise
            logger.warning(
                "job %s: its outcome is not written yet (%s); trying again in %.2fs",
                name,
                exc,
                pause,
            )
            records.drop_broken_connections()
            time.sleep(pause)
            pause = min(pause * 2, 1.0)
