"""What a worker answers for a job it was handed, and how a run of it ends.

Shared by the worker loop (:mod:`.loop`, sync tasks) and the asyncio runner
(:mod:`.asyncrunner`, ``async def`` tasks), so both give every copy of a job the
same answer: an attach marker is answered from the record, a job that runs elsewhere
is followed, and a run's outcome is committed through its claim before gearmand
hears of it, or handed over to the run that waits to follow it (:mod:`~django_gearattach.runs`).
Everything here blocks (database, sockets): the asyncio runner calls it in threads.
"""

from __future__ import annotations

import json
import logging
import threading
import traceback
from typing import Any

from .. import records, runs, signals
from ..clients import get_client
from ..exceptions import BadPayload
from ..gearman.errors import GearmanError
from ..gearman.protocol import Command
from ..gearman.worker import Assignment
from ..models import Job, Status
from ..payload import ATTACH_MARKER, decode_document, dumps, is_attach_marker, shown
from ..scheduling import pending_epoch
from ..submission import send_successor
from ..tasks import JobContext, Rescheduled
from . import fencing
from .claim import ENDED, Claim
from .reporting import Reporter
from .starting import NotHere, Starter

logger = logging.getLogger("django_gearattach.worker.loop")

#: A run about to start: its claim, its arguments and the payload they came from.
Prepared = tuple[Claim, list[Any], dict[str, Any], bytes | dict[str, Any]]


class Answering:
    """The answers and run endings of a worker (see the module's docstring)."""

    starter: Starter
    _stop: threading.Event

    def _prepare(self, job: Assignment, key: str, marked: bool = False) -> Prepared | str:
        """The run of a job handed to this worker, its claim taken (its running mark
        committed); or, when it does not run here, what this copy answered."""
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
            return claim, args, kwargs, payload
        return claim, args, kwargs, document

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

    def _failed(
        self, claim: Claim, context: JobContext, reporter: Reporter, exc: BaseException
    ) -> str:
        """The task raised ``exc``: record the failure (cancelled, once a cancel was
        asked for) with its traceback, then tell gearmand, or hand the record over."""
        job, key = claim.job, claim.key
        error = f"{type(exc).__name__}: {exc}"
        fields = {
            "error": error,
            "traceback": "".join(traceback.format_exception(exc)),
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

    def _completed(self, claim: Claim, context: JobContext, reporter: Reporter, raw: bytes) -> str:
        """The task returned (``raw``, its JSON): record it, then tell gearmand, or hand
        the record over."""
        result = json.loads(raw)
        if not self._conclude(claim, Status.COMPLETE, {"result": result} | reporter.pending()):
            return self._not_concluded(claim)
        _call_outcome_callbacks(context, Status.COMPLETE, result)
        if claim.successor is not None:
            return self._hand_on(claim, Status.COMPLETE, raw)
        self._send_final(claim.job, Command.WORK_COMPLETE, raw, claim=claim)
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
        """Commit a run's outcome; False when the run no longer holds its claim."""
        return self._finish(claim, status, fields)

    def _send_final(
        self, job: Assignment, command: Command, *args: bytes, claim: Claim | None = None
    ) -> None:
        """The job's final packet: a run's (through its claim, once) or, without
        ``claim``, this copy's answer from the record."""
        if claim is not None:
            claim.send_final(command, *args)
        else:
            job.send(command, *args)

    def _finish(self, claim: Claim, status: Status, fields: dict[str, Any]) -> bool:
        """Record a run's outcome, only while the run holds its claim."""
        written = claim.end(status, fields)
        if written and claim.successor is None and signals.job_finished.receivers:
            signals.send_finished(claim.function, claim.key)
        return written

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
