"""Fenced execution: a task body runs at most once at a time, whatever the servers do.

gearmand can hand out two copies of one job: an attacher that could not reach a
job's server revives it on the next one, and the first server comes back while that
copy runs; or a worker's server restarts while its job runs and the recovery sweep
resubmits it. So a worker claims the record before it runs the task: the UPDATE that
marks the job running (and counts the attempt) also sets a new ``execution`` id and
``lease_until``, and only matches a record that no live claim holds. It is the same
statement as before, with two more columns and one more condition, so a job costs no
extra statement.

While the task runs, its claim is renewed: a progress write (which happens anyway)
carries the new ``lease_until``, and a :class:`LeaseKeeper` thread renews it every
third of ``LEASE`` for a task that reports nothing for that long. Every write of the
run (progress, outcome, retry, the watchdog's) goes through its
:class:`~.claim.Claim`, conditioned on its ``execution``: a run that lost its claim
writes and sends nothing more.

A copy of the job that finds a live claim does not run the task: its worker waits
(reading the record) for the outcome and gives it to its own clients. When the lease
ends unrenewed (its worker died, or lost the database), the next copy claims it and
runs. A claim held by a process on this host that no longer exists is taken over at
once, without waiting for the lease.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from django.db import DatabaseError, connections
from django.utils import timezone

from .. import records
from ..conf import conf
from ..models import Job, Status

if TYPE_CHECKING:
    from .claim import Claim

logger = logging.getLogger("django_gearattach.worker.fencing")


def new_execution() -> str:
    return uuid.uuid4().hex


def lease_end(now: datetime | None = None) -> datetime:
    return (now or timezone.now()) + timedelta(seconds=conf.LEASE)


def holds_live_claim(record: Job, now: datetime | None = None) -> bool:
    """Whether a run of the job holds a claim that has not expired."""
    return (
        record.status == Status.RUNNING
        and bool(record.execution)
        and record.lease_until is not None
        and record.lease_until >= (now or timezone.now())
    )


def holder_is_gone(record: Job, host: str) -> bool:
    """Whether the claim's worker ran on this host and that process no longer exists.

    Hosts are told apart by name: processes on hosts that share a host name (in
    separate PID namespaces) must not share a database.
    """
    if record.worker_host != host or not record.worker_pid:
        return False
    try:
        os.kill(record.worker_pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # it exists, owned by someone else
        return False
    return _is_zombie(record.worker_pid)  # killed, not yet reaped by its parent


def _is_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            state = stat.read().rsplit(b")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state in (b"Z", b"X")


def wait_interval() -> float:
    return min(0.25, conf.LEASE / 4)


def claim_fields(execution: str, now: datetime) -> dict[str, Any]:
    return {"execution": execution, "lease_until": lease_end(now)}


@dataclass
class _Held:
    claim: Claim
    renewed: float


class LeaseKeeper:
    """Renews the claim of the job this worker runs, every third of ``LEASE``.

    One thread per worker, idle unless a run goes a third of ``LEASE`` without a
    progress write (which renews the claim itself, see :meth:`renewed`).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._held: _Held | None = None
        self._wake = threading.Event()
        self._closed = False
        self._thread: threading.Thread | None = None

    def hold(self, claim: Claim) -> None:
        with self._lock:
            self._held = _Held(claim, time.monotonic())
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._loop, name="gearattach-lease", daemon=True
            )
            self._thread.start()

    def renewed(self) -> None:
        """A write of the run just carried a new ``lease_until``."""
        with self._lock:
            if self._held is not None:
                self._held.renewed = time.monotonic()

    def release(self) -> None:
        with self._lock:
            self._held = None

    def close(self) -> None:
        self._closed = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def _loop(self) -> None:
        try:
            while not self._closed:
                period = conf.LEASE / 3
                self._wake.wait(period / 4)
                with self._lock:
                    held = self._held
                    due = held is not None and time.monotonic() - held.renewed >= period
                if held is not None and due:
                    self._renew(held)
        finally:
            connections.close_all()

    def _renew(self, held: _Held) -> None:
        try:
            renewed = held.claim.renew()  # refused once the run ended or lost its claim
        except DatabaseError as exc:
            logger.warning("job %s: lease not renewed: %s", held.claim.name, exc)
            records.drop_broken_connections()
            return
        with self._lock:
            if self._held is held:
                held.renewed = time.monotonic()
                if not renewed:
                    self._held = None
