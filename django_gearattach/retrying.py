"""A running job that asks to run again later: same (function, key), new arguments.

Used by the Celery shim's ``self.retry()``. In the worker, while the job runs:
:func:`reschedule` writes the next run into the record (``scheduled`` or ``queued``,
``retries`` + 1, ``attempts`` back to 0 since they count the starts of one run) through
the run's claim (:mod:`django_gearattach.worker.claim`), and returns the step that
submits it. The write matches only while this run holds its claim and no cancel was
requested for it: a run that lost its claim (another copy of the job holds the record)
gets :class:`~django_gearattach.exceptions.ClaimLost` and retries nothing; a run that
was cancelled ends ``cancelled`` instead of running again
(:class:`~django_gearattach.exceptions.JobCancelled`). The task then raises
:class:`~django_gearattach.tasks.Rescheduled`; the worker ends the run in gearmand
(WORK_FAIL, with no outcome recorded), and calls that step, which waits until
gearmand has forgotten the run (a submit of the same unique would otherwise join the
ending job) and submits the next one. Attachers keep following: an attacher that
sees the run end finds the record still active and goes on watching it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

from django.db.models import F

from .clients import get_client
from .conf import conf
from .exceptions import ClaimLost, GearattachError, JobCancelled
from .gearman.errors import ConnectionFailed
from .gearman.rendezvous import Address
from .models import Job
from .submission import _Request, _send
from .tasks import JobContext

#: How long the next run waits for gearmand to forget the current one.
FORGET_WAIT = 2.0


def reschedule(
    context: JobContext,
    args: Sequence[Any],
    kwargs: Mapping[str, Any],
    run_at: datetime | None,
    reason: str,
) -> Callable[[Address], None]:
    """Record the next run of the job that ``context``'s run runs; return its submit step."""
    function, key, claim = context.function, context.key, context.claim
    if claim is None:
        raise GearattachError(f"{function}[{key}] can only be retried while a worker runs it")
    record = Job.objects.for_key(function, key).only("pk", "priority").get()
    request = _Request(function, args, kwargs, key, record.priority, None, "", run_at=run_at)
    requeued = claim.requeue(
        request.status,
        scheduled_for=request.scheduled_for,
        arguments=request.arguments,
        retries=F("retries") + 1,
        attempts=0,
        error=reason,
        started_at=None,
        worker_host="",
        worker_pid=None,
    )
    if not requeued:
        if claim.held:  # a cancel was requested for this run: it ends cancelled
            context.cancel_requested = True
            raise JobCancelled(f"job {function}[{key}] was cancelled: its retry is not run")
        raise ClaimLost(
            f"job {function}[{key}]: this run lost its claim (another run holds the record): "
            "its retry is not recorded"
        )

    def resend(server: Address) -> None:
        job = Job.objects.get(pk=record.pk)
        if conf.IMMEDIATE:
            from .worker import immediate  # the worker layer, only in immediate mode

            immediate.run(job, request.data)  # the retry runs now, as in Celery's eager mode
            return
        _wait_until_forgotten(server, request.unique)
        _send(request, job)

    return resend


def _wait_until_forgotten(server: Address, unique: bytes) -> None:
    client = get_client()
    deadline = time.monotonic() + FORGET_WAIT
    delay = 0.005
    while time.monotonic() < deadline:
        try:
            if not client.status_unique(server, unique).known:
                return
        except ConnectionFailed:
            return  # that server is gone: the next run goes wherever routing sends it
        time.sleep(delay)
        delay = min(delay * 2, 0.2)
