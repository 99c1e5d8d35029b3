"""Cancelling a running job, on any host.

:func:`request_cancel` marks the record (``cancel_requested_at``) in one conditional
UPDATE from ``running``. The worker process that runs the job, wherever it is, looks
for that mark while the job runs (every ``GEARATTACH["CANCEL_CHECK_INTERVAL"]``
seconds, one indexed SELECT; see :mod:`~django_gearattach.worker.watchdog`). When it sees it:

* the task's next ``progress()`` or ``data()`` call raises :class:`JobCancelled`, and
  ``job.cancelled`` is true, so a task can stop cleanly (and clean up);
* a task that ends by raising (JobCancelled or anything else) ends ``cancelled``;
* a task that has not ended ``GEARATTACH["CANCEL_GRACE"]`` seconds later is stopped:
  the worker records it cancelled, sends WORK_FAIL (gearmand forgets the job, so it
  is not requeued, and attachers hear at once) and ends its process; the supervisor
  starts a new one.

The record ends ``cancelled``, a finished status, so the recovery sweep (which
resubmits active records only) leaves it alone.

A cancel applies to the run it was made for. A run asked to cancel that retries
(``self.retry()``) is not retried: the job ends ``cancelled``. A run that ends without
seeing the request (its worker died, and the job runs again on another worker, or the
recovery sweep resubmits it) takes the request with it: the next run starts without
one, as every run does; cancel again to stop that one.
"""

from __future__ import annotations

from django.utils import timezone

from .exceptions import JobCancelled
from .models import Job

__all__ = ["CANCELLED_RUNNING_ERROR", "JobCancelled", "is_requested", "request_cancel"]

#: The error recorded for a running job that was cancelled.
CANCELLED_RUNNING_ERROR = "JobCancelled: cancelled while it ran"


def request_cancel(job: Job) -> bool:
    """Ask the worker running ``job`` to stop it; False when it is not running."""
    running = Job.objects.filter(pk=job.pk).running()
    if running.filter(cancel_requested_at=None).update(cancel_requested_at=timezone.now()):
        return True
    # Asked before (twice is once), or not running at all.
    return running.filter(cancel_requested_at__isnull=False).exists()


def is_requested(function: str, key: str, execution: str | None = None) -> bool:
    """Whether a cancel is requested for the running job ``function[key]`` (for its run
    ``execution`` when given: the worker's watchdog asks through the run's claim)."""
    running = Job.objects.for_key(function, key).running()
    if execution is not None:
        running = running.filter(execution=execution)
    return running.filter(cancel_requested_at__isnull=False).exists()
