"""Time limits of a task: a soft one raised inside it, a hard one that ends its process.

``@task(time_limit=60, soft_time_limit=50)`` (or ``GEARATTACH["TIME_LIMIT"]`` and
``["SOFT_TIME_LIMIT"]`` for every task). The worker's :class:`~django_gearattach.
watchdog.Watchdog` enforces them:

* at the soft limit it raises :class:`SoftTimeLimitExceeded` in the thread running
  the task (a signal interrupts ``time.sleep`` and blocking socket reads; pure Python
  sees it at its next bytecode), so the task can catch it and clean up; uncaught, the
  job fails with that error like any other exception;
* at the hard limit it records the job ``failed`` with a :class:`TimeLimitExceeded`
  error, sends WORK_FAIL (so gearmand forgets the job and attachers hear at once),
  and ends the worker process; the supervisor starts a new one.

Both apply to the task's *body* only (:func:`run_body`): once the body has returned,
what follows (the Celery shim's signals and chain hand-over, the outcome's write and
report) is never interrupted, however close to the limit the body returned. The
soft limit is raised only where the body's own frames run, never in a frame of the
code that called it.
"""

from __future__ import annotations

import math
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType
from typing import Any, TypeVar

from .exceptions import GearattachError

_R = TypeVar("_R")

#: The frame of :func:`run_body` of each thread whose task body is running.
_bodies: dict[int, FrameType] = {}


def run_body(func: Callable[..., _R], /, *args: Any, **kwargs: Any) -> _R:
    """Call a task's body: its time limits apply inside this call and nowhere else."""
    ident = threading.get_ident()
    _bodies[ident] = sys._getframe()
    try:
        return func(*args, **kwargs)
    finally:
        _bodies.pop(ident, None)


def body_running(thread: int) -> bool:
    """Whether the task body that ``thread`` runs has started and not returned."""
    return thread in _bodies


def inside_body(thread: int, frame: FrameType | None) -> bool:
    """Whether ``frame`` (where ``thread`` was interrupted) is in its task's body: below
    :func:`run_body`'s frame, not that frame itself (before the call, or after it)."""
    body = _bodies.get(thread)
    if body is None or frame is None or frame is body:
        return False
    while frame is not None:
        if frame is body:
            return True
        frame = frame.f_back
    return False


class SoftTimeLimitExceeded(Exception):
    """Raised inside a task when its soft time limit passes; catch it to clean up."""


class TimeLimitExceeded(Exception):
    """The error of a job whose task ran past its hard time limit (never raised in it)."""


def checked_limit(name: str, value: Any) -> float | None:
    """``value`` as seconds (None: no limit); a clear error for anything else."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise GearattachError(f"{name} must be a number of seconds or None, not {value!r}")
    if not math.isfinite(value) or value <= 0:
        raise GearattachError(f"{name} must be a positive number of seconds, not {value!r}")
    return float(value)


@dataclass(frozen=True, slots=True)
class TimeLimits:
    soft: float | None = None
    hard: float | None = None

    @classmethod
    def of(cls, soft: Any, hard: Any) -> TimeLimits:
        limits = cls(checked_limit("soft_time_limit", soft), checked_limit("time_limit", hard))
        if limits.soft is not None and limits.hard is not None and limits.soft >= limits.hard:
            raise GearattachError(
                f"soft_time_limit ({limits.soft:g}s) must be shorter than time_limit "
                f"({limits.hard:g}s): the soft limit is the task's chance to clean up first"
            )
        return limits

    def or_defaults(self) -> TimeLimits:
        """These limits, with the settings' defaults where the task sets none."""
        from .conf import conf

        return TimeLimits(
            self.soft if self.soft is not None else conf.SOFT_TIME_LIMIT,
            self.hard if self.hard is not None else conf.TIME_LIMIT,
        )


def soft_message(seconds: float) -> str:
    return f"soft time limit ({seconds:g}s) exceeded"


def hard_message(seconds: float) -> str:
    return (
        f"TimeLimitExceeded: hard time limit ({seconds:g}s) exceeded; the worker process "
        "running the task was ended"
    )


def async_hard_message(seconds: float) -> str:
    """The error of an ``async def`` task's run ended at its hard limit (its process
    goes on: the other runs on its event loop are not stopped with it)."""
    return (
        f"TimeLimitExceeded: hard time limit ({seconds:g}s) exceeded; the task's coroutine "
        "was cancelled and its run ended"
    )
