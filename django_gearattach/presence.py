"""Which functions have workers: gearmand's ``status`` counts, cached per process.

A job whose function no worker registers waits in gearmand until one does, and looks
like a slow job unless someone says so. Attachers (and through them the processing
page and the widget), ``submit()`` of a name this process does not define, the
``gearattach`` command and the admin ask here. Each server's answer is reused for
:data:`REFRESH` seconds by everyone in the process, so asking costs at most one admin
``status`` per server every few seconds, never one per page or per job; a server that
does not answer is remembered as such for as long.

``submit()`` refuses a function that neither this process defines (after importing
every app's ``tasks`` module) nor any worker registers, nor
``GEARATTACH["EXTERNAL_TASKS"]`` names: such a job would wait forever. The refusal
names the closest known functions.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import difflib
import fnmatch
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .conf import conf
from .exceptions import UnknownTask
from .gearman.connection import admin_command
from .gearman.errors import GearmanError
from .gearman.protocol import parse_status
from .gearman.rendezvous import Address, parse_cached

if TYPE_CHECKING:
    from .models import Job

#: Seconds a server's ``status`` answer is reused by this process.
REFRESH = 2.0
#: Seconds an answer that no worker registers a function is trusted before saying so:
#: a worker that just started must not be reported missing from a stale answer.
RECHECK = 0.5
#: Seconds to wait for a server's answer.
TIMEOUT = 1.0


@dataclass(frozen=True, slots=True)
class Snapshot:
    """One server's ``status``: workers registered per function, or unreachable."""

    reachable: bool
    workers: dict[str, int] = field(default_factory=dict)
    at: float = 0.0

    @property
    def fresh(self) -> bool:
        return self.younger_than(REFRESH)

    def younger_than(self, seconds: float) -> bool:
        return time.monotonic() - self.at < seconds


_snapshots: dict[Address, Snapshot] = {}
_locks: dict[Address, threading.Lock] = {}
_locks_lock = threading.Lock()


def snapshot(address: Address, max_age: float = REFRESH) -> Snapshot:
    """``address``'s answer, asked again when the one held is older than ``max_age``.

    One thread asks; the others that need the same server meanwhile wait for its answer.
    """
    held = _snapshots.get(address)
    if held is not None and held.younger_than(max_age):
        return held
    with _locks_lock:
        lock = _locks.setdefault(address, threading.Lock())
    with lock:
        held = _snapshots.get(address)
        if held is not None and held.younger_than(max_age):
            return held
        try:
            lines = admin_command(address, "status", timeout=TIMEOUT)
            workers = {s.function: s.workers for s in parse_status(lines)}
            held = Snapshot(True, workers, time.monotonic())
        except GearmanError:
            held = Snapshot(False, at=time.monotonic())
        _snapshots[address] = held
        return held


def _count(function: str, found: list[Snapshot]) -> int | None:
    answered = [s for s in found if s.reachable]
    if not answered:
        return None
    return sum(s.workers.get(function, 0) for s in answered)


def _held(addresses: Sequence[Address]) -> list[Snapshot] | None:
    """The answers held for every address, if all are fresh (else None)."""
    found = [_snapshots.get(a) for a in addresses]
    if all(s is not None and s.fresh for s in found):
        return found  # type: ignore[return-value]
    return None


def workers(function: str, addresses: Sequence[Address]) -> int | None:
    """Workers registered for ``function`` on these servers; None when none answered.

    A count of 0 is asked again when the answer is older than :data:`RECHECK`.
    """
    count = _count(function, [snapshot(a) for a in addresses])
    if count == 0:
        count = _count(function, [snapshot(a, RECHECK) for a in addresses])
    return count


async def aworkers(function: str, addresses: Sequence[Address]) -> int | None:
    """:func:`workers` for the event loop: a thread asks only when an answer is stale."""
    held = _held(addresses)
    if held is not None:
        count = _count(function, held)
        if count or all(s.younger_than(RECHECK) for s in held):
            return count
    return await asyncio.to_thread(workers, function, addresses)


def unserved(job: Job) -> bool:
    """Whether ``job`` waits in the queue of a server where no worker registers its function.

    What the admin's job page, the processing page and the JSON API say of a queued
    job; answered from the cached counts (at most one ``status`` per server and
    :data:`REFRESH`). False when the job is not queued, in immediate mode, and when
    no server answered (the job may well be served).
    """
    if conf.IMMEDIATE or job.status != "queued":
        return False
    address = parse_cached(job.server) if job.server else conf.SERVERS[0]
    return workers(job.function, [address]) == 0


def served_functions(addresses: Sequence[Address], max_age: float = REFRESH) -> set[str] | None:
    """The functions some worker registers on any of these servers; None if none answered."""
    found = [s for s in (snapshot(a, max_age) for a in addresses) if s.reachable]
    if not found:
        return None
    return {name for s in found for name, count in s.workers.items() if count > 0}


def forget() -> None:
    """Drop every held answer (tests, or after starting workers on purpose)."""
    _snapshots.clear()


# -- submit() of a function nobody knows --------------------------------------------------
_unchecked: contextvars.ContextVar[bool] = contextvars.ContextVar("unchecked", default=False)


@contextlib.contextmanager
def unchecked() -> Iterator[None]:
    """Submit names this process cannot vouch for (``gearattach submit --unregistered``)."""
    token = _unchecked.set(True)
    try:
        yield
    finally:
        _unchecked.reset(token)


def external(name: str) -> bool:
    """Whether ``GEARATTACH["EXTERNAL_TASKS"]`` names ``name`` (fnmatch patterns)."""
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in conf.EXTERNAL_TASKS)


def _defined(name: str) -> bool:
    from .tasks import find_task

    return find_task(name) is not None


def check_submittable(task: Any) -> None:
    """Raise :class:`UnknownTask` when no one could ever run a job of ``task``.

    A :class:`~django_gearattach.tasks.Task` always passes, and so does a name that
    this process defines, that ``EXTERNAL_TASKS`` names, or that a worker registers
    on a configured server; when no server answers, ``submit`` says so itself.
    """
    if not isinstance(task, str) or _unchecked.get() or conf.IMMEDIATE:
        return
    if _defined(task) or external(task):
        return
    servers = conf.SERVERS
    served = served_functions(servers)
    if served is not None and task not in served:
        served = served_functions(servers, RECHECK)  # a worker may have just started
    if served is None or task in served:
        return
    raise UnknownTask(unknown_message(task, served, servers))


async def acheck_submittable(task: Any) -> None:
    """:func:`check_submittable` without blocking the event loop."""
    if not isinstance(task, str) or _unchecked.get() or conf.IMMEDIATE:
        return
    from .tasks import registered_tasks, tasks_discovered

    if task in registered_tasks() or external(task):
        return
    servers = conf.SERVERS
    if tasks_discovered() and _held(servers) is not None:
        served = served_functions(servers)  # answered from memory: no I/O
        if served is None or task in served:
            return
    await asyncio.to_thread(contextvars.copy_context().run, check_submittable, task)


def unknown_message(name: str, served: set[str], servers: Sequence[Address]) -> str:
    from .tasks import registered_tasks

    known = set(registered_tasks()) | served
    matches = difflib.get_close_matches(name, sorted(known), n=3, cutoff=0.6)
    where = ", ".join(map(str, servers))
    hint = f" Did you mean {' or '.join(repr(m) for m in matches)}?" if matches else ""
    return (
        f"no task named {name!r} is defined in this process, and no worker on {where} "
        f"registers it, so a job of it would wait forever.{hint} Nothing was submitted. "
        "For a task that only workers elsewhere define, list its name in "
        "GEARATTACH['EXTERNAL_TASKS']."
    )
