"""Rate and concurrency limits of a task, across all workers, without a scheduler.

``@task(rate_limit="10/m")`` (Celery's syntax: a number per ``s``, ``m`` or ``h``; a
bare number is per second) and ``@task(concurrency=N)`` (at most N running at once,
over every worker process on every host).

Each worker process asks gearmand for a limited function's jobs (CAN_DO) only while
it holds the right to start one, and stops asking (CANT_DO) once it has reported the
job that spent it (not before: gearmand 1.1.20 requeues a running job whose worker
sends CANT_DO for its function); other functions' jobs keep flowing to it
meanwhile. The rights live in the database
(:class:`~django_gearattach.models.Throttle`), claimed with one conditional UPDATE
each:

* a rate right: the generic cell rate algorithm on one row per function; a claim
  succeeds when the row's time is not ahead of now by more than one interval, and
  moves it one interval on. Starts can therefore not exceed the rate (plus one per
  worker process that holds an unused right). A process that has none waits in its
  grab no longer than until the next one is due.
* a concurrency right: one of N lease rows, held by ``host:pid`` while the process
  may run the function, given back when the process is handed another function's
  job, renewed while held (every quarter of ``GEARATTACH["LEASE"]``), and free once
  its lease expires (a process that died frees its slot after ``LEASE`` seconds).

A process trusts a slot only while its renewals succeed. One that fails (the
database does not answer) makes the process stop asking for the function's jobs
until a renewal succeeds again, and a renewal that matches fewer rows than the
process holds (its lease ran out and another process took the slot) gives those
slots up: a process that lost its slot never runs the function beside the one that
took it. Every database error on these paths drops a broken connection, so the next
attempt reconnects.

Cost: a rate-limited function costs one UPDATE per job started. A concurrency
limit costs a process that holds a slot two statements for each job of another
function it is handed (give the slot back, claim it again), and a process that
found every slot taken one UPDATE per slot every :data:`SLOT_RETRY` seconds. Idle
workers that hold a right keep it. Failure: with the database down, a process
claims nothing, so limited functions stop running (the others go on).
"""

from __future__ import annotations

import logging
import os
import re
import socket
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from django.db import DatabaseError
from django.db.models import F, Q, Value
from django.db.models.functions import Greatest

from .conf import conf
from .exceptions import GearattachError
from .gearman.worker import Assignment, WorkerPool

logger = logging.getLogger("django_gearattach.worker.loop")


def slot_lease() -> float:
    """Seconds a concurrency slot stays held without renewal: ``GEARATTACH["LEASE"]``."""
    return conf.LEASE


def renew_every() -> float:
    """Seconds between renewals of the slots a process holds."""
    return slot_lease() / 4


#: Seconds a process that found every slot taken waits before it tries again.
SLOT_RETRY = 1.0
_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0}
_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(?:/\s*([smh]))?\s*$")


def parse_rate(value: Any) -> float | None:
    """Celery's rate syntax (``"10/m"``, ``"2/s"``, ``"100/h"``, ``5``) as starts per second."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise GearattachError(f"rate_limit must be like '10/m', not {value!r}")
    if isinstance(value, int | float):
        text = str(value)
    elif isinstance(value, str):
        text = value
    else:
        raise GearattachError(f"rate_limit must be like '10/m', not {value!r}")
    match = _RATE.match(text)
    if match is None:
        raise GearattachError(
            f"rate_limit must be a number of starts per s, m or h (like '10/m'), not {value!r}"
        )
    per_second = float(match.group(1)) / _UNITS[match.group(2) or "s"]
    if per_second <= 0:
        raise GearattachError(f"rate_limit must be above zero, not {value!r}")
    return per_second


def checked_concurrency(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise GearattachError(f"concurrency must be a whole number of at least 1, not {value!r}")
    return value


@dataclass
class _Limited:
    function: str
    interval: float | None  # seconds between starts (rate limit)
    concurrency: int | None
    has_rate: bool = False  # a rate right is held, not used yet
    slot: int | None = None  # the concurrency slot held
    confirmed: bool = True  # the slot's last renewal succeeded
    next_try: float = 0.0  # monotonic time of the next claim attempt

    @property
    def ready(self) -> bool:
        return (self.interval is None or self.has_rate) and (
            self.concurrency is None or (self.slot is not None and self.confirmed)
        )


class Throttles:
    """One worker process's rights to start its limited functions' jobs."""

    def __init__(self, limited: Iterable[_Limited]) -> None:
        self.limited = {item.function: item for item in limited}
        self.holder = f"{socket.gethostname()[:200]}:{os.getpid()}"
        self._renewed = time.monotonic()
        self._doubt = False  # a renewal failed: no slot is trusted until one succeeds
        self._lock = threading.Lock()  # renewals come from the loop and the watchdog
        self._rows_made: set[tuple[str, int]] = set()
        #: The function of the job handed last (running, or being reported).
        self.current: str | None = None

    @classmethod
    def for_tasks(cls, tasks: Iterable[Any]) -> Throttles | None:
        limited = [
            _Limited(t.name, 1.0 / t.rate_limit if t.rate_limit else None, t.concurrency)
            for t in tasks
            if t.rate_limit or t.concurrency
        ]
        return cls(limited) if limited else None

    def install(self, pool: WorkerPool) -> None:
        """Pause the limited functions, and claim rights around each of ``pool``'s grabs."""
        self.holder = f"{socket.gethostname()[:200]}:{os.getpid()}"
        for name in self.limited:
            pool.can_do(name, False)
        grab, grab_ahead = pool.grab, pool.grab_ahead

        def throttled_grab(wait: float = 1.0) -> Assignment | None:
            wait = min(wait, self.before_grab(pool))
            return self.handed(pool, grab(wait=wait))

        def throttled_grab_ahead() -> Assignment | None:
            if self.current in self.limited:
                # The job being reported is a limited function's, and this process
                # must not send CANT_DO for it before reporting it: gearmand 1.1.20
                # requeues a job whose worker sends CANT_DO for its function while
                # running it. So no job is grabbed ahead now.
                return None
            self.before_grab(pool)
            return self.handed(pool, grab_ahead())

        pool.grab = throttled_grab  # type: ignore[method-assign]
        pool.grab_ahead = throttled_grab_ahead  # type: ignore[method-assign]

    def before_grab(self, pool: WorkerPool) -> float:
        """Claim missing rights; CAN_DO what may start, CANT_DO the rest. Returns the
        longest wait worth doing before a right is due.

        Never called while a limited function's job runs here: before a grab its
        final packet leaves ahead of these, and no job is grabbed ahead of it.
        """
        now = time.monotonic()
        wait = 60.0
        self.renew()
        for item in self.limited.values():
            if not item.ready and now >= item.next_try:
                self._claim(item, now)
            pool.can_do(item.function, item.ready)
            if not item.ready:
                wait = min(wait, max(item.next_try - now, 0.0))
        return wait

    def handed(self, pool: WorkerPool, job: Assignment | None) -> Assignment | None:
        """Spend the right of ``job``'s function; give back slots that it does not use."""
        if job is None:
            return None
        self.current = job.function
        for item in self.limited.values():
            if item.function == job.function:
                item.has_rate = False  # CANT_DO waits for the next grab (see above)
            elif item.slot is not None:
                self._release(item)  # another function runs: let another process take it
                pool.can_do(item.function, False)  # none of its jobs runs here: harmless
        return job

    def acquire(self, function: str) -> float:
        """Claim what ``function`` misses to start a job (the asyncio runner, which asks
        for each limited function on a connection of its own instead of CAN_DO/CANT_DO):
        0.0 when it may start one now, else the seconds worth waiting first."""
        self.renew()
        item, now = self.limited[function], time.monotonic()
        if not item.ready and now >= item.next_try:
            self._claim(item, now)
        return 0.0 if item.ready else max(item.next_try - now, 0.01)

    def spend(self, function: str) -> None:
        """A job of ``function`` was handed over: its rate right is used."""
        self.limited[function].has_rate = False

    def release_all(self) -> None:
        """Give back every slot held (a stopping process)."""
        for item in self.limited.values():
            self._release(item)

    # -- the database -------------------------------------------------------------------
    def _claim(self, item: _Limited, now: float) -> None:
        try:
            if item.interval is not None and not item.has_rate:
                item.has_rate, wait = self._claim_rate(item)
                if not item.has_rate:
                    item.next_try = now + wait
                    return
            if item.concurrency is not None and item.slot is None:
                item.slot = self._claim_slot(item)
                if item.slot is None:
                    item.next_try = now + SLOT_RETRY
        except DatabaseError as exc:
            logger.warning("rate/concurrency limit of %s: %s", item.function, exc)
            _drop_broken_connections()
            item.next_try = now + 1.0

    def _row(self, function: str, slot: int) -> None:
        from .models import Throttle

        if (function, slot) not in self._rows_made:
            Throttle.objects.get_or_create(function=function, slot=slot)
            self._rows_made.add((function, slot))

    def _claim_rate(self, item: _Limited) -> tuple[bool, float]:
        from .models import Throttle

        assert item.interval is not None
        self._row(item.function, Throttle.RATE)
        now = time.time()
        rows = Throttle.objects.filter(function=item.function, slot=Throttle.RATE)
        claimed = rows.filter(until__lte=now + item.interval).update(
            until=Greatest(F("until"), Value(now)) + item.interval
        )
        if claimed:
            return True, 0.0
        until = rows.values_list("until", flat=True).first() or now
        return False, max(until - item.interval - now, 0.001)

    def _claim_slot(self, item: _Limited) -> int | None:
        from .models import Throttle

        assert item.concurrency is not None
        now = time.time()
        for slot in range(item.concurrency):
            self._row(item.function, slot)
            taken = (
                Throttle.objects.filter(function=item.function, slot=slot)
                .filter(Q(holder="") | Q(until__lt=now) | Q(holder=self.holder))
                .update(holder=self.holder, until=now + slot_lease())
            )
            if taken:
                return slot
        return None

    def _release(self, item: _Limited) -> None:
        from .models import Throttle

        slot, item.slot = item.slot, None
        if slot is None:
            return
        try:
            Throttle.objects.filter(function=item.function, slot=slot, holder=self.holder).update(
                holder="", until=0.0
            )
        except DatabaseError as exc:  # the lease runs out by itself
            logger.warning("concurrency slot of %s not given back: %s", item.function, exc)
            _drop_broken_connections()

    def renew(self) -> None:
        """Extend the leases of the slots held, every :func:`renew_every` seconds (after a
        failed renewal, at every call); give up those another process holds now.

        Called before each grab, and by the watchdog while a job runs.
        """
        from .models import Throttle

        if not self._doubt and time.monotonic() - self._renewed < renew_every():
            return
        with self._lock:
            self._renewed = time.monotonic()
            held = [item for item in self.limited.values() if item.slot is not None]
            if not held:
                self._doubt = False
                return
            mine = Throttle.objects.filter(holder=self.holder)
            try:
                count = mine.update(until=time.time() + slot_lease())
                still = set(mine.values_list("function", "slot")) if count < len(held) else None
            except DatabaseError as exc:
                logger.warning("concurrency slots not renewed (not used until they are): %s", exc)
                _drop_broken_connections()
                self._doubt = True
                for item in held:
                    item.confirmed = False
                return
            self._doubt = False
            for item in held:
                item.confirmed = True
                if still is not None and (item.function, item.slot) not in still:
                    logger.warning(
                        "%s lost its concurrency slot %s of %s (its lease ran out and another "
                        "process took it): it stops taking the function's jobs",
                        self.holder,
                        item.slot,
                        item.function,
                    )
                    item.slot = None


def _drop_broken_connections() -> None:
    from .records import drop_broken_connections

    drop_broken_connections()
