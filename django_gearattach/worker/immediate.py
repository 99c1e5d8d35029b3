"""Immediate mode: ``GEARATTACH["IMMEDIATE"] = True`` runs jobs inside ``submit``.

A convenience for the unit tests of projects that use this app, like Celery's eager
mode and Django's ``ImmediateBackend``; not a way to deploy. ``submit`` runs the task
in the calling thread before it returns, through the worker's own code, so the
record (status, attempts, progress, data, result, error, traceback, worker host and
pid), the signals and the error messages are those a ``gearworker`` would produce.
No gearmand is contacted: what the worker would send to gearmand is dropped, because
nobody can be attached to a job that finishes before ``submit`` returns.
``attach`` then answers from the finished record, as it does for any finished job.

The task runs even inside ``transaction.atomic`` (a real submit waits for the
commit), as Django's ``ImmediateBackend`` does, so tests inside a test transaction
see the outcome at once.

A submit starts no thread and leaves nothing behind (a test suite submits thousands
of jobs): the worker runs ``inline``, without the lease keeper and the watchdog, so
time limits and cancels are not enforced (as in Celery's eager mode), nor rate and
concurrency limits.
"""

from __future__ import annotations

from typing import Any

from django.utils.module_loading import autodiscover_modules

from .. import signals
from ..exceptions import UnknownTask
from ..gearman.connection import Connection
from ..gearman.protocol import Command
from ..gearman.rendezvous import Address
from ..gearman.worker import Assignment
from ..models import Job
from ..tasks import Task, get_task
from .loop import Worker


class _InProcess(Address):
    """Where immediate jobs run; recorded as the job's server."""

    __slots__ = ()

    def __str__(self) -> str:
        return "immediate"


class _Discard(Connection):
    """Swallows the packets the worker code sends: no gearmand is involved."""

    def send_bytes(self, data: bytes) -> None:
        pass

    def defer(self, command: Command, *args: bytes | str | int) -> None:
        pass

    def flush(self) -> None:
        pass


HERE = _InProcess("immediate", 0)


def _find_task(name: str) -> Task[Any, Any]:
    try:
        return get_task(name)
    except UnknownTask:
        # This process plays the worker, so it finds tasks as ``gearworker`` does.
        autodiscover_modules("tasks")
        return get_task(name)


def run(job: Job, data: bytes) -> Job:
    """Run ``job`` (a queued record) now with the JSON arguments ``data``; return it updated.

    Raises :class:`~django_gearattach.exceptions.UnknownTask` (after marking the
    record failed) when no task is registered under the job's function.
    """
    if signals.job_submitted.receivers:
        signals.send(signals.job_submitted, job)
    try:
        task = _find_task(job.function)
    except UnknownTask as exc:
        Job.objects.filter(pk=job.pk).fail(f"UnknownTask: {exc}")
        raise
    worker = Worker([task], [], inline=True)
    assignment = Assignment(_Discard(HERE, None), b"", job.function, job.key.encode(), data)
    # The worker's own steps; database errors reach the caller, as a failed submit would.
    worker.run_now(assignment)
    job.refresh_from_db()
    return job
