"""A key's runs: what a submit does with its key's record, and how a run that waits for
another (a follow-up, a replacement) takes its place when that one ends.

The policy (:mod:`~django_gearattach.policies`) says what a submit wants; this module
carries it out on the record, each step one conditional UPDATE on the run it read
(``run_number = N``), so it holds across processes and hosts: of many submits that find a
stale outcome, one starts the refresh and the others find it running; of many
triggers during a run, one asks for the follow-up and the others find it asked for. A
submit whose step another one beat reads the record again and decides anew.

The record holds the waiting run (``next_reason``, ``next_arguments``) while the
current one runs. When the current run ends, the record becomes the waiting run's:
``run_number`` + 1, queued, with its arguments (a complete run's result is kept as
``previous_result``). That change is one conditional UPDATE, made by whoever sees the
run end first:

* the worker, in place of the run's outcome write (:func:`hand_over`): the worker's
  outcome write is conditioned on no run waiting, so there is no moment at which the
  run has ended and the record says finished with a run waiting;
* :meth:`~django_gearattach.models.JobQuerySet.end` (the watchdog's time limits and
  cancels, the recovery sweep), which starts the waiting run instead of finishing;
* a submit or an attacher that finds a finished record with a run waiting anyway
  (a path that ended the record without either): :func:`promote`.

Only then is the new run sent to gearmand
(:func:`~django_gearattach.submission.send_successor`), once gearmand has forgotten
the run that ended (a submit of the same unique would otherwise join the ending job).
If that send never happens (its process died), the record says queued, and the
recovery sweep or an attacher's marker revives the run from the record.
"""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from django.utils import timezone

from . import records
from .cancelling import request_cancel
from .exceptions import GearattachError
from .models import WAITING, Job, Status
from .policies import KeyPolicy, OnConflict, RunReason

__all__ = ["Action", "Prepared", "action", "hand_over", "prepare", "promote", "supersedes"]


class Action(enum.Enum):
    """What a submit does with the record it found."""

    STORED = "stored"  # answer with the finished record as it is
    JOIN = "join"  # the active run answers
    RESTART = "restart"  # start the finished key's next run
    SUCCESSOR = "successor"  # start the run that waits on the finished record first
    FOLLOW_UP = "follow_up"  # ask for one follow-up of the running run
    REPLACE_RUNNING = "replace_running"  # cancel the running run; ours follows it
    REPLACE_WAITING = "replace_waiting"  # our arguments replace the waiting run's


def action(policy: KeyPolicy, job: Job, rerun: bool, now: datetime) -> Action:
    """What a submit under ``policy`` (``rerun``: run a finished key again) does with
    the record ``job`` of its key."""
    if job.is_finished:
        if job.has_successor:
            return Action.SUCCESSOR
        if rerun or not policy.fresh(job, now):
            return Action.RESTART
        return Action.STORED
    if policy.on_conflict == OnConflict.FOLLOW_UP and job.status == Status.RUNNING:
        # A run waits already (it starts after now, so it sees this trigger's data): the
        # trigger folds into it, and no write is needed to know it.
        return Action.JOIN if job.has_successor else Action.FOLLOW_UP
    if policy.on_conflict == OnConflict.REPLACE:
        if job.status == Status.RUNNING:
            return Action.REPLACE_RUNNING
        # Only a waiting run submitted under "replace" reads its arguments from the
        # record when it starts; another waits to run, then the replacement follows it.
        if job.on_conflict == OnConflict.REPLACE:
            return Action.REPLACE_WAITING
        return Action.REPLACE_RUNNING
    return Action.JOIN


def restart_reason(policy: KeyPolicy, job: Job, rerun: bool, now: datetime) -> RunReason:
    if rerun:
        return RunReason.RERUN
    if job.status == Status.COMPLETE and policy.stale(job, now) is not None:
        return RunReason.REFRESH
    return RunReason.EXPIRED


# -- the conditional writes: each True when it changed the record ---------------------------
def _this_run(job: Job) -> Any:
    return Job.objects.filter(pk=job.pk, run_number=job.run_number)


def restart(job: Job, reason: RunReason, status: Status, **fields: Any) -> bool:
    """Start the finished ``job``'s next run, unless another submit did since it was read."""
    return bool(_this_run(job).restart(reason, status, **fields))


def ask_follow_up(job: Job, arguments: dict[str, Any]) -> bool:
    """Ask for one follow-up of the running ``job``; False when it was asked for
    already, or the run is no longer running."""
    asked = (
        _this_run(job)
        .running()
        .filter(next_reason="")
        .update(next_reason=OnConflict.FOLLOW_UP.value, next_arguments=arguments)
    )
    if asked:
        job.next_reason, job.next_arguments = OnConflict.FOLLOW_UP.value, arguments
    return bool(asked)


def replace_running(job: Job, arguments: dict[str, Any]) -> bool:
    """Make ``arguments`` the run that follows the active ``job`` (any earlier waiting
    run loses its place: latest wins), then cancel ``job``'s run as ``cancel()``
    would. False when the run has ended (or restarted) since it was read."""
    marked = (
        _this_run(job)
        .filter(status__in=(*WAITING, Status.RUNNING))
        .update(next_reason=OnConflict.REPLACE.value, next_arguments=arguments)
    )
    if not marked:
        return False
    job.next_reason, job.next_arguments = OnConflict.REPLACE.value, arguments
    request_cancel(job)  # a waiting run is not cancelled: it runs, then the replacement
    return True


def promote(job: Job) -> Job | None:
    """Start the run waiting on the finished ``job`` (as read), unless someone did since
    (see :mod:`~django_gearattach.runs`). Returns the record as it now is when
    this call started that run (the caller sends it to gearmand); None otherwise."""
    if not _this_run(job).finished().start_successor():
        return None
    return Job.objects.get(pk=job.pk)


def replace_waiting(job: Job, arguments: dict[str, Any]) -> bool:
    """Give the waiting ``job`` (submitted under "replace": it reads its arguments from
    the record when it starts) ``arguments`` instead, as its next run. False when a
    worker started it (or it changed) since it was read."""
    replaced = (
        _this_run(job)
        .waiting()
        .update(
            arguments=arguments, run_number=job.run_number + 1, run_reason=RunReason.REPLACE.value
        )
    )
    if replaced:
        job.arguments, job.run_number, job.run_reason = (
            arguments,
            job.run_number + 1,
            RunReason.REPLACE,
        )
    return bool(replaced)


# -- a submit, step by step -------------------------------------------------------------------
class Submission(Protocol):
    """What :func:`prepare` needs of a submit (``submission._Request``)."""

    function: str
    key: str
    policy: KeyPolicy
    arguments: dict[str, Any]

    def existing(self) -> Job | None: ...
    def insert(self) -> tuple[Job, bool]: ...
    def restart(self, job: Job, reason: RunReason) -> bool: ...


@dataclass(slots=True)
class Prepared:
    """What a submit found or made of its key's record."""

    job: Job
    #: Whether this submit's run goes to gearmand.
    send: bool = False
    #: Runs this submit started that were waiting on a finished run (sent first).
    successors: list[Job] = field(default_factory=list)


#: Times a submit decides again after other submits changed its key's record first.
ROUNDS = 100


def prepare(request: Submission, rerun: bool) -> Prepared:
    """Carry out ``request``'s key policy on its key's record (inserting it if there
    is none): the record to return, and what must be sent to gearmand."""
    successors: list[Job] = []
    for _ in range(ROUNDS):
        existing = request.existing()
        if existing is None:
            job, created = request.insert()
            if created:
                return Prepared(job, True, successors)
            continue  # another submit recorded the key first: decide on its record
        done = _act(request, rerun, existing, successors)
        if done is not None:
            return done
        time.sleep(0.001)
    raise GearattachError(
        f"{request.function}[{request.key}]: other submits kept changing the key's record "
        f"({ROUNDS} rounds); submit again"
    )


def _act(request: Submission, rerun: bool, job: Job, successors: list[Job]) -> Prepared | None:
    """One step on the record ``job``; None when another submit changed the record
    first (the caller reads it again)."""
    now = timezone.now()
    verdict = action(request.policy, job, rerun, now)
    if verdict in (Action.STORED, Action.JOIN):
        return Prepared(job, False, successors)
    if verdict == Action.SUCCESSOR:
        promoted = promote(job)
        if promoted is not None:
            successors.append(promoted)
        return None
    if verdict == Action.RESTART:
        if not request.restart(job, restart_reason(request.policy, job, rerun, now)):
            return None
        job.refresh_from_db()
        return Prepared(records.mark_read(job), True, successors)
    if verdict == Action.FOLLOW_UP:
        if ask_follow_up(job, request.arguments):
            return Prepared(job, False, successors)
        job.refresh_from_db()  # asked for already (this trigger folds into it), or ended
        if job.status == Status.RUNNING and job.has_successor:
            return Prepared(job, False, successors)
        return None
    if verdict == Action.REPLACE_WAITING:
        replaced = replace_waiting(job, request.arguments)
    else:
        replaced = replace_running(job, request.arguments)
    return Prepared(job, False, successors) if replaced else None


# -- the end of a run with a run waiting --------------------------------------------------------
def hand_over(
    function: str, key: str, execution: str, status: Status, fields: dict[str, Any]
) -> Job | None:
    """A worker's run of ``function[key]`` (its claim ``execution``) ended with
    ``status`` and ``fields`` while a run waits to follow it: make the record that
    run's. Returns the record as it now is; None when this run does not hold the
    record any more (its claim was lost) or no run waits."""
    kept = {"result": fields["result"]} if status == Status.COMPLETE else {}
    changed = (
        Job.objects.for_key(function, key)
        .running()
        .filter(execution=execution)
        .start_successor(status, **kept)
    )
    if not changed:
        return None
    return Job.objects.for_key(function, key).get()


def supersedes(job: Job) -> bool:
    """Whether ``job``'s current run replaced the one before it (latest wins): that
    run's attachers are moved to this one, and hear that it was superseded."""
    return job.run_reason == RunReason.REPLACE
