"""Signals sent as a job moves through its life; the sender is always the Job model.

Every signal carries ``job``, the :class:`~django_gearattach.models.Job` record as it
is at that moment. ``job_submitted`` is sent in the submitting process; the others
in the process that runs the task (a ``gearworker`` process, or the submitting
process in immediate mode).

``job_submitted(job)``
    A new job was handed to gearmand (or, in immediate mode, is about to run).
    Not sent when a submit joined a job that was already queued or running, nor when
    it returned a finished job's stored outcome.
``job_started(job)``
    A worker started running the task (``job.attempts`` counts this attempt).
``job_progress(job, numerator, denominator)``
    The task reported progress (the record's progress fields already hold it).
``job_finished(job)``
    The outcome is committed: ``job.status`` is complete, failed, lost or cancelled.

Nothing is computed for a signal without receivers: the worker reads the record for
a signal only when something is connected to it. An exception in a receiver is
logged (logger ``django_gearattach.signals``) and does not reach the job, the worker
or the submitter: the job has been submitted, started or finished either way.
"""

from __future__ import annotations

import logging
from typing import Any

from django.dispatch import Signal

from .models import Job

logger = logging.getLogger("django_gearattach.signals")

job_submitted = Signal()
job_started = Signal()
job_progress = Signal()
job_finished = Signal()


def _log_failures(responses: list[tuple[Any, Any]], job: Job) -> None:
    for receiver, response in responses:
        if isinstance(response, BaseException):
            logger.error(
                "signal receiver %r failed for job %s[%s]",
                receiver,
                job.function,
                job.key,
                exc_info=response,
            )


def send(signal: Signal, job: Job, **extra: Any) -> None:
    """Send ``signal`` for ``job``; log the receivers' exceptions instead of raising them."""
    _log_failures(signal.send_robust(sender=Job, job=job, **extra), job)


async def asend(signal: Signal, job: Job, **extra: Any) -> None:
    _log_failures(await signal.asend_robust(sender=Job, job=job, **extra), job)


def _load(function: str, key: str) -> Job | None:
    return Job.objects.for_key(function, key).first()


def send_started(function: str, key: str) -> Job | None:
    """Send ``job_started`` with the record read now; return it (None without receivers)."""
    if not job_started.receivers:
        return None
    record = _load(function, key)
    if record is not None:
        send(job_started, record)
    return record


def send_progress(
    record: Job | None, function: str, key: str, numerator: int, denominator: int
) -> Job | None:
    """Send ``job_progress``; the record is read once per job and then kept up to date."""
    if record is None:
        record = _load(function, key)
        if record is None:
            return None
    record.progress_numerator, record.progress_denominator = numerator, denominator
    send(job_progress, record, numerator=numerator, denominator=denominator)
    return record


def send_finished(function: str, key: str) -> None:
    if job_finished.receivers:
        record = _load(function, key)
        if record is not None:
            send(job_finished, record)
