"""``Prefer: wait``: an offloaded view's answer held until its job ends, within bounds.

A program that sends ``Prefer: wait=N`` (RFC 7240) gets the view's response at once
when the job finishes within N seconds, else the usual ``202``. Waiting is a
courtesy, never owed: beyond any bound the request is answered at once.

* A wait holds no database connection: the request's connections are closed first
  (a request inside a transaction, ``ATOMIC_REQUESTS``, is answered at once), and
  gearmand pushes the job's end to the process's hub.
* It counts as a stream (:mod:`~django_gearattach.web.streams`) against the client's
  limit and the process's. A request whose session this very request created is
  counted by its address: a client that drops its cookies gets a new session each
  time, and must not get a new limit with it.
* An ``async def`` view waits on the event loop and holds no thread. A sync view under
  ASGI holds its request's thread while it waits: at most
  ``GEARATTACH["WAIT_THREADS_PER_PROCESS"]`` such waits at once per process.
* Under WSGI a waiting request holds a whole worker, so ``Prefer: wait`` is not
  honoured unless ``GEARATTACH["WSGI_MAX_WAIT"]`` allows some seconds (then within the
  same limits).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from asgiref.sync import SyncToAsync, async_to_sync, sync_to_async
from django.db import connections
from django.http import HttpResponseBase

from ..attachment import attach
from ..conf import conf
from ..exceptions import GearattachError
from ..models import Job
from . import streams
from .hub import get_hub
from .streams import StreamLimitReached


@dataclass
class Deferred:
    """An answer that waits for its job first: ``answer(job)`` once it ended or the time
    is up, with the record as it is then."""

    job: Job
    seconds: float
    #: Whom the wait counts against (:func:`~django_gearattach.web.streams.client_of`).
    client: str
    answer: Callable[[Job], HttpResponseBase]


class _Threads:
    """The sync waits of this process, at most ``WAIT_THREADS_PER_PROCESS`` at once."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.count = 0

    @contextlib.contextmanager
    def held(self) -> Iterator[bool]:
        """Yields whether this thread may wait (and counts it while it does)."""
        with self._lock:
            allowed = self.count < conf.WAIT_THREADS_PER_PROCESS
            if allowed:
                self.count += 1
        try:
            yield allowed
        finally:
            if allowed:
                with self._lock:
                    self.count -= 1


threads = _Threads()


def _event_loop_running() -> bool:
    loop = getattr(SyncToAsync.threadlocal, "main_event_loop", None)
    return loop is not None and loop.is_running()


def _release_connections() -> bool:
    """Close this thread's database connections; False inside a transaction."""
    conns = connections.all(initialized_only=True)
    if any(conn.in_atomic_block for conn in conns):
        return False
    for conn in conns:
        conn.close()
    return True


def _reread(job: Job) -> Job:
    return Job.objects.for_key(job.function, job.key).first() or job


def wait_then_answer(deferred: Deferred) -> HttpResponseBase:
    """The sync path: wait on this thread (within the bounds above), then answer."""
    job, seconds = deferred.job, deferred.seconds
    asgi = _event_loop_running()
    if not asgi:
        seconds = min(seconds, conf.WSGI_MAX_WAIT)
    if job.is_finished or seconds <= 0:
        return deferred.answer(job)
    try:
        slot = streams.registry.open(deferred.client)
    except StreamLimitReached:
        return deferred.answer(job)
    with slot, threads.held() as allowed:
        if not allowed or not _release_connections():
            return deferred.answer(job)
        if asgi:
            async_to_sync(_await_on_hub)(job, seconds)
        else:
            _attach_blocking(job, seconds)
    return deferred.answer(_reread(job))


async def await_then_answer(deferred: Deferred) -> HttpResponseBase:
    """The async path: wait on the event loop, holding no thread, then answer."""
    job = deferred.job
    if job.is_finished or deferred.seconds <= 0:
        return await sync_to_async(deferred.answer)(job)
    try:
        slot = streams.registry.open(deferred.client)
    except StreamLimitReached:
        return await sync_to_async(deferred.answer)(job)
    with slot:
        await streams.release_request_resources()
        await _await_on_hub(job, deferred.seconds)
    job = await Job.objects.for_key(job.function, job.key).afirst() or job
    return await sync_to_async(deferred.answer)(job)


async def _await_on_hub(job: Job, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    # It waits for the outcome only: no stream (summarised), whatever the job sends.
    async with get_hub().subscribe(
        job.function, job.key, record=job, summarised=True
    ) as subscription:
        while (left := deadline - time.monotonic()) > 0:
            message = await subscription.get(left)
            if message is None or message.final:
                return


def _attach_blocking(job: Job, seconds: float) -> None:
    with contextlib.suppress(GearattachError, TimeoutError):
        for event in attach(job, timeout=seconds):
            if event.terminal:
                return
