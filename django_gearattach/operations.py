"""What an operator does to jobs: retry a finished one, cancel an active one.

A running job is cancelled through its record: the worker that runs it stops it
(:mod:`~django_gearattach.cancelling`). The rest of this docstring is about a job
that has not started.

Used by the admin's actions (and ``AsyncResult.revoke()`` in the Celery shim).

Cancelling relies on two facts checked against gearmand 1.1.20 (see the tests):

* The record is marked cancelled first, in one conditional UPDATE from ``queued``.
  A worker that is handed the job afterwards finds the record finished and answers
  from it (WORK_FAIL) instead of running the task, so once that UPDATE succeeds the
  task cannot start, whatever gearmand does next. If the UPDATE finds the job
  running, it is too late: Gearman cannot stop a job a worker has started.
* A queued job's handle is not in the record (workers record it when they start
  the job). Submitting SUBMIT_JOB_BG again with the same function and unique
  coalesces into the queued job and returns its handle without side effects; the
  data sent is the attach marker, so if gearmand no longer had the job, the job this
  creates is answered from the (cancelled) record too. Then the admin protocol's
  ``cancel job HANDLE`` removes it from the queue. gearmand marks a cancelled job
  ignored and frees it the next time a worker asks for work, so it still counts in
  ``status`` until then.
"""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass
from typing import Any

from . import signals
from .cancelling import request_cancel
from .clients import get_client, servers_for
from .exceptions import JobNotFound
from .gearman.connection import admin_command
from .gearman.errors import GearmanError
from .gearman.rendezvous import Address
from .housekeeping import delete_files
from .models import WAITING, Job, Status, ended
from .payload import ATTACH_MARKER, check_key, new_key
from .submission import submit
from .tasks import Task, function_name
from .web import sensitive
from .web.capture import signed_again, stored_files
from .web.messages import OFFLOAD_FUNCTION

logger = logging.getLogger("django_gearattach")

CANCELLED_ERROR = "cancelled before it started"


class Cancel(enum.Enum):
    CANCELLED = "cancelled"
    #: Running: its worker was asked to stop it (it ends cancelled within the grace).
    REQUESTED = "requested"
    FINISHED = "finished"


@dataclass(frozen=True, slots=True)
class CancelOutcome:
    verdict: Cancel
    #: What gearmand said, or why it could not be told (the job is cancelled either way).
    note: str = ""


def cancel(job: Job | Task[Any, Any] | str, key: str | None = None) -> CancelOutcome:
    """Cancel a job: at once if it is queued or scheduled (see the module docstring),
    through its worker if it runs (:func:`~django_gearattach.cancelling.request_cancel`).

    ``cancel(record)`` or ``cancel(task_or_function_name, key)``; raises
    :class:`~django_gearattach.exceptions.JobNotFound` for a key with no record.
    """
    if not isinstance(job, Job):
        if key is None:
            raise TypeError("cancel(function, key) needs the job's key")
        function = function_name(job)
        found = Job.objects.for_key(function, key).first()
        if found is None:
            raise JobNotFound(function, key)
        job = found
    fields = ended(Status.CANCELLED, CANCELLED_ERROR)
    marked = Job.objects.filter(pk=job.pk).waiting().update(**fields)
    if not marked:
        if request_cancel(job):
            return CancelOutcome(Cancel.REQUESTED)
        job.refresh_from_db(fields=["status"])
        if job.status in WAITING:  # it went back to the queue meanwhile: try again
            return cancel(job)
        return CancelOutcome(Cancel.FINISHED)
    for name, value in fields.items():  # the instance says what the record says
        setattr(job, name, value)
    note = _remove_from_queue(job)
    # Uploads of an offloaded request that never ran: nothing will read them now,
    # nor its sensitive fields.
    delete_files(stored_files(job.key, job.arguments, None))
    if job.function == OFFLOAD_FUNCTION:
        sensitive.forget(job.function, job.key)
    if signals.job_finished.receivers:
        signals.send(signals.job_finished, job)
    return CancelOutcome(Cancel.CANCELLED, note)


def _remove_from_queue(job: Job) -> str:
    try:
        address = Address.parse(job.server) if job.server else None
    except ValueError:
        address = None
    if address is None:
        address = servers_for(job.function, job.key)[0]
    try:
        handle = get_client().submit_background(
            address, job.function, check_key(job.key), ATTACH_MARKER, job.priority
        )
        reply = admin_command(address, f"cancel job {handle.decode()}")[0]
    except (GearmanError, ValueError) as exc:
        logger.warning("job %s[%s] cancelled in the record only: %s", job.function, job.key, exc)
        return f"gearmand {address} was not told ({exc}); a worker will refuse the job"
    return f"gearmand {address}: {reply}"


def retry(job: Job) -> Job:
    """Submit ``job``'s function again with its arguments, under a new random key.

    The new job belongs to the same owner (user and session). Raises ValueError for
    a job that is still queued, scheduled or running, for
    a record whose arguments are unknown (a job submitted by another client that was
    lost before a worker recorded it), and :class:`~django_gearattach.exceptions.
    BadPayload` for an offloaded request that this site did not sign (its signature
    names its key, so a retry signs it again, and only then).
    """
    if job.is_active:  # a second copy would run beside it
        raise ValueError(
            f"{job.function}[{job.key}] is still {job.status}: wait for it to finish, or "
            "cancel it first"
        )
    if job.arguments is None:
        raise ValueError(f"the arguments of {job.function}[{job.key}] are unknown")
    key = new_key()
    kwargs = job.arguments.get("kwargs", {})
    if job.function == OFFLOAD_FUNCTION:
        kwargs = signed_again(kwargs, job.key, key)
    new = submit(
        job.function,
        job.arguments.get("args", []),
        kwargs,
        key=key,
        priority=job.priority,
        owner=job.owner,
    )
    if job.session_hash:
        new.session_hash = job.session_hash
        Job.objects.filter(pk=new.pk).update(session_hash=job.session_hash)
    return new
