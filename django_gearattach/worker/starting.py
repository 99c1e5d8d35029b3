"""Starting a run: the running mark that claims a job's record, or why the job must not
run here.

A worker handed a job (one copy of it: see :mod:`.fencing`) marks its record running
with a new claim (:class:`~.claim.Claim`), in the UPDATE that counts the attempt. When
the record is not there to claim, the :class:`Starter` says why instead:

* another run holds a live claim: it waits, reading the record, for that run to end
  (its outcome is this copy's), and takes over at once from a process of this host
  that no longer exists;
* the record finished: this copy answers from it;
* the job stopped its worker ``MAX_ATTEMPTS`` times, or was lost with its arguments: it
  is ended here without running, only if no run claimed it meanwhile;
* the worker is stopping: the copy goes back to gearmand unrun (:class:`GiveBack`), as
  a stopping worker starts no job.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from dataclasses import dataclass
from typing import Any

from django.db import DatabaseError, IntegrityError
from django.db.models import F
from django.utils import timezone

from .. import records, signals
from ..conf import conf
from ..gearman.worker import Assignment
from ..models import ACTIVE, Job, Status, ended, started
from ..payload import shown
from . import fencing
from .claim import Claim, patiently

logger = logging.getLogger("django_gearattach.worker.loop")


class GiveBack(Exception):
    """The worker is stopping while the job waits here: hand it back to gearmand unrun."""


@dataclass(frozen=True)
class NotHere:
    """Why a copy of a job does not run here, and what it answers.

    ``record`` finished: answer from it. ``error``: the job was ended here without
    running (recorded with that error). Neither: another run holds the record; follow it.
    """

    record: Job | None = None
    error: str = ""


class Starter:
    """The running marks, and the claims, of one worker process's runs."""

    def __init__(self, host: str, pid: int, stop: threading.Event) -> None:
        self.host = host
        self.pid = pid
        self._stop = stop
        #: The claim of each job this worker marked running.
        self.claims: dict[tuple[str, str], Claim] = {}
        #: Claims of runs this worker abandoned (not running, whatever their lease says).
        self.abandoned: deque[str] = deque(maxlen=64)

    def forget(self, job: Assignment, key: str, *, abandoned: bool = False) -> Claim | None:
        claim = self.claims.pop((job.function, key), None)
        if claim is not None and abandoned:  # its claim may be live: this worker may take it
            self.abandoned.append(claim.execution)
        return claim

    def running_fields(self, job: Assignment, key: str) -> dict[str, Any]:
        """The running mark, with a new claim (execution id and lease) for this run."""
        execution = fencing.new_execution()
        self.claims[job.function, key] = Claim(job, key, execution)
        fields = started(
            handle=job.handle.decode(errors="replace"),
            server=str(job.server),
            worker_host=self.host,
            worker_pid=self.pid,
        )
        return fields | fencing.claim_fields(execution, fields["started_at"])

    def running_mark(self, job: Assignment, key: str, fields: dict[str, Any]) -> records.Update:
        """The common case of :meth:`start`: an active record below MAX_ATTEMPTS, which
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

    def holder_is_gone(self, record: Job) -> bool:
        """Whether the run holding the claim is known not to run any more."""
        return record.execution in self.abandoned or fencing.holder_is_gone(record, self.host)

    def await_claim(self, function: str, key: str, *, give_back: bool) -> Job:
        """Wait, reading the record, until the live claim on it ends; return the record.

        Another copy of this job runs elsewhere: its outcome is this copy's outcome.
        When the worker is asked to stop meanwhile, ``give_back`` hands this copy back
        to gearmand unrun (:class:`GiveBack`); otherwise the record is returned as it
        is (the caller ends this copy without running it).
        """
        logger.warning(
            "job %s[%s] runs elsewhere (a live claim): waiting for its outcome",
            function,
            shown(key),
        )
        while True:
            self._stop.wait(fencing.wait_interval())
            record = records.get(function, key)
            if record is None:
                raise DatabaseError(f"the record of {function}[{key}] is gone")
            if not fencing.holds_live_claim(record) or self.holder_is_gone(record):
                return record
            if self._stop.is_set():
                if give_back:
                    raise GiveBack
                return record

    def start(
        self, job: Assignment, key: str, arguments: dict[str, Any] | None
    ) -> Claim | NotHere:
        """Mark the job running and return its run's claim; or why it must not run here."""
        tries = 0
        while tries < 3:
            if self._stop.is_set():
                raise GiveBack  # a stopping worker starts no job
            fields = self.running_fields(job, key)
            if records.update_together(self.running_mark(job, key, fields)) == [1]:
                return self.claims[job.function, key]
            self.forget(job, key)
            record = records.get(job.function, key)
            if record is not None and fencing.holds_live_claim(record):
                if self.holder_is_gone(record) and self._take_over(job, key, record):
                    return self.claims[job.function, key]
                self.forget(job, key)
                record = self.await_claim(job.function, key, give_back=True)
                if not record.is_finished:
                    continue  # the claim expired: claim it (not counted as a try)
            tries += 1
            if record is None:
                # Submitted by another client (pygearman, the gearman CLI): record it now.
                fields = self.running_fields(job, key)
                try:
                    Job.objects.create(
                        function=job.function,
                        key=key,
                        attempts=1,
                        stream_run=1,
                        arguments=arguments,
                        **fields,
                    )
                except IntegrityError:
                    self.forget(job, key)
                    continue  # a submitter recorded it meanwhile: take the UPDATE path
                return self.claims[job.function, key]
            if record.is_finished:
                return NotHere(record)
            if record.attempts < conf.MAX_ATTEMPTS:
                continue  # its record changed between our UPDATE and SELECT: try again
            message = (
                f"gave up after {record.attempts} attempts: the job stopped its worker each "
                "time (GEARATTACH['MAX_ATTEMPTS'])"
            )
            return self.end_unclaimed(job, key, Status.FAILED, message)
        raise DatabaseError(f"could not record job {job.function}[{key}]")

    def _take_over(self, job: Assignment, key: str, record: Job) -> bool:
        """Claim a job whose claim a dead process on this host holds."""
        fields = self.running_fields(job, key)
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

    def end_unclaimed(self, job: Assignment, key: str, status: Status, message: str) -> NotHere:
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
            return NotHere()
        if signals.job_finished.receivers:
            signals.send_finished(job.function, key)
        return NotHere(error=message)

    def unmark(self, job: Assignment) -> None:
        """Undo the running mark of a job grabbed ahead that gearmand requeues unrun.

        Its attempt was counted but it never ran: left counted, a job near
        MAX_ATTEMPTS could be failed without running again. Only this worker's own
        mark is undone, never one that the job's next worker has written since.
        """
        key = job.unique.decode("utf-8", "replace")
        claim = self.forget(job, key)
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
                "job %s[%s] requeued; its attempt stays counted: %s",
                job.function,
                shown(key),
                exc,
            )
