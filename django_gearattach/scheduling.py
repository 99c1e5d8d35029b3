"""When a submitted job should run: ``submit(run_at=...)`` and ``submit(delay=...)``.

gearmand 1.1.20 holds a job submitted with SUBMIT_JOB_EPOCH until its Unix time has
passed, then hands it to a worker like any queued job (checked against the real server
in tests/test_scheduling.py). The epoch is in whole seconds, rounded up, so a job never
starts early. A time that has already passed is not an error: the job runs now, as a
plain background job.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.utils import timezone

from .exceptions import InvalidSchedule


@dataclass(frozen=True, slots=True)
class Schedule:
    """The time asked for, and the epoch to send (None: the time has passed, run now)."""

    run_at: datetime
    epoch: int | None

    @property
    def future(self) -> bool:
        return self.epoch is not None


def schedule(
    run_at: datetime | None = None, delay: float | timedelta | None = None
) -> Schedule | None:
    """Validate ``run_at``/``delay``; None when neither is given.

    Raises :class:`InvalidSchedule` for a naive datetime, a negative, infinite or
    non-numeric delay, or both at once.
    """
    if run_at is None and delay is None:
        return None
    if run_at is not None and delay is not None:
        raise InvalidSchedule("give run_at or delay, not both")
    now = timezone.now()
    if delay is not None:
        seconds = delay.total_seconds() if isinstance(delay, timedelta) else delay
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
            raise InvalidSchedule(
                f"delay must be a number of seconds or a timedelta, got {type(delay).__name__}"
            )
        if not math.isfinite(seconds) or seconds < 0:
            raise InvalidSchedule(
                f"delay must be zero or more seconds, got {seconds!r}; to run a job now, "
                "leave delay out"
            )
        run_at = now + timedelta(seconds=seconds)
    assert run_at is not None
    if not isinstance(run_at, datetime):
        raise InvalidSchedule(f"run_at must be a datetime, got {type(run_at).__name__}")
    if timezone.is_naive(run_at):
        raise InvalidSchedule(
            f"run_at={run_at.isoformat()} is a naive datetime, so the moment it names is "
            "ambiguous; pass an aware one, e.g. timezone.now() + timedelta(minutes=5) or "
            "datetime(..., tzinfo=ZoneInfo('Europe/Paris'))"
        )
    if run_at <= now:
        return Schedule(run_at, None)
    return Schedule(run_at, math.ceil(run_at.timestamp()))


def pending_epoch(scheduled_for: datetime | None) -> int | None:
    """The epoch to resubmit a scheduled job with; None when its time has come."""
    if scheduled_for is None or scheduled_for <= timezone.now():
        return None
    return math.ceil(scheduled_for.timestamp())
