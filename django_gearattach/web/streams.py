"""Long-lived answers: SSE streams, waiting long-polls and websockets, within bounds.

A browser following a job holds a connection open for as long as the job runs. Each
one costs this process memory, so they are counted: at most
``GEARATTACH["STREAM_LIMIT_PER_CLIENT"]`` at once per client (a user, a session, or
for a visitor with neither, an address) and ``STREAM_LIMIT_PER_PROCESS`` in all; a
request beyond either gets HTTP 429 (websockets: close code 4429) and its widget
retries later. A stream ends after ``STREAM_MAX_AGE`` seconds with a ``reconnect``
message; the widget reconnects at once, showing its token again, so a stream never
outlives a logout or its token by more than that.

Under ASGI, Django gives every request a thread of its own for its synchronous
work, and the database connection that thread opened stays open until the request
ends. A stream waits far longer than it works, so :func:`release_request_resources`
closes the request's connections and retires its thread once the stream has read
what it needs; the hub (:mod:`~django_gearattach.web.hub`) reads records for every
stream on one shared thread.
"""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

from asgiref.sync import SyncToAsync, sync_to_async
from django.db import connections

from ..conf import conf
from ..exceptions import GearattachError
from .tokens import Identity

#: Seconds a refused client is asked to wait (``Retry-After``).
RETRY_AFTER = 5


class StreamLimitReached(GearattachError):
    """This client, or this process, already holds as many streams as allowed."""


class Slot:
    """One open stream, counted until :meth:`release` (which may be called twice)."""

    def __init__(self, registry: Registry, client: str) -> None:
        self.registry = registry
        self.client = client
        self.released = False

    def release(self) -> None:
        self.registry._release(self)

    def __enter__(self) -> Slot:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


class Registry:
    """The streams open in this process, per client."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.total = 0
        self.per_client: Counter[str] = Counter()

    def open(self, client: str) -> Slot:
        """Count a new stream for ``client``; :class:`StreamLimitReached` if over a limit."""
        per_client, per_process = conf.STREAM_LIMIT_PER_CLIENT, conf.STREAM_LIMIT_PER_PROCESS
        with self._lock:
            if per_client and self.per_client[client] >= per_client:
                raise StreamLimitReached(
                    f"too many open streams from this client (at most {per_client}): close "
                    "other pages that follow jobs, or retry shortly"
                )
            if per_process and self.total >= per_process:
                raise StreamLimitReached(
                    "this server follows as many jobs as it may right now; retry shortly"
                )
            self.total += 1
            self.per_client[client] += 1
        return Slot(self, client)

    def _release(self, slot: Slot) -> None:
        with self._lock:
            if slot.released:
                return
            slot.released = True
            self.total -= 1
            self.per_client[slot.client] -= 1
            if self.per_client[slot.client] <= 0:
                del self.per_client[slot.client]


registry = Registry()


def client_of(identity: Identity, address: str | None) -> str:
    """Whom a stream counts against: the identity's binding, else the remote address."""
    bindings = identity.bindings()
    return bindings[0] if bindings else f"address:{address or '?'}"


def _close_connections() -> None:
    for conn in connections.all(initialized_only=True):
        if not conn.in_atomic_block:
            conn.close()


async def release_request_resources() -> None:
    """Close this request's database connections and retire its thread.

    Call it from an async view (or its streaming iterator) once it needs the
    database no more. Synchronous work that Django does after it (middleware on the
    response, closing the request) gets a short-lived thread of its own.
    """
    await sync_to_async(_close_connections)()
    _retire_request_thread()


def _retire_request_thread() -> None:
    # asgiref keeps one single-thread executor per request context (Django enters a
    # ThreadSensitiveContext per ASGI request) until the request ends; shut it down
    # now. If asgiref changes these names, nothing happens (tests/web/test_streams.py
    # counts the server's threads and fails).
    context_var: Any = getattr(SyncToAsync, "thread_sensitive_context", None)
    executors: Any = getattr(SyncToAsync, "context_to_thread_executor", None)
    if context_var is None or executors is None:
        return
    context = context_var.get(None)
    executor = executors.pop(context, None) if context is not None else None
    if executor is not None:
        executor.shutdown(wait=False)
