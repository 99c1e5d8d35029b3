"""``crontab`` and ``schedule`` for ``beat_schedule`` (``celery.schedules``).

Each schedule answers one question, :meth:`next_after`: the first tick strictly
after a moment. Ticks are absolute moments that every scheduler computes alike (an
interval's ticks are multiples of it since the Unix epoch, not "N seconds after the
last run" as in Celery beat), which is what lets several schedulers submit the same
tick under the same job key: see :mod:`.beat`.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any

from django.utils import timezone

_DAYS = {"sun": 0, "mon": 1, "tue": 2, "wed": 3, "thu": 4, "fri": 5, "sat": 6}
_MONTHS = {
    name: number
    for number, name in enumerate(
        ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"],
        start=1,
    )
}


class schedule:
    """Every ``run_every`` (a ``timedelta`` or seconds), on multiples of it since the epoch."""

    def __init__(self, run_every: timedelta | float, **kwargs: Any) -> None:
        if kwargs:
            raise NotImplementedError(
                f"schedule({', '.join(kwargs)}=...) is not supported: ticks are fixed "
                "multiples of run_every"
            )
        seconds = run_every.total_seconds() if isinstance(run_every, timedelta) else run_every
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or seconds < 1:
            raise ValueError(f"a schedule runs at most once a second, got {run_every!r}")
        self.seconds = float(seconds)

    def __repr__(self) -> str:
        return f"<freq: {self.seconds:g}s>"

    def next_after(self, moment: datetime) -> datetime:
        step = self.seconds
        tick = (math.floor(moment.timestamp() / step) + 1) * step
        return datetime.fromtimestamp(tick, tz=UTC)


def _parse(spec: Any, low: int, high: int, names: dict[str, int], field: str) -> frozenset[int]:
    """One crontab field: ``*``, ``*/n``, ``a``, ``a-b``, ``a-b/n``, lists of these."""
    if isinstance(spec, int) and not isinstance(spec, bool):
        spec = str(spec)
    if isinstance(spec, (set, frozenset, list, tuple)):
        spec = ",".join(str(v) for v in spec)
    if not isinstance(spec, str):
        raise ValueError(f"crontab {field}={spec!r}: expected a string, an int or a set")
    values: set[int] = set()

    def number(text: str) -> int:
        text = text.strip().lower()
        if text in names:
            return names[text]
        if not text.isdigit():
            raise ValueError(f"crontab {field}={spec!r}: {text!r} is not a number")
        return int(text)

    for part in spec.split(","):
        part = part.strip()
        match = re.fullmatch(r"(\*|[\w]+(?:-[\w]+)?)(?:/(\d+))?", part)
        if not match:
            raise ValueError(f"crontab {field}={spec!r}: cannot read {part!r}")
        span, step_text = match.groups()
        step = int(step_text) if step_text else 1
        if step < 1:
            raise ValueError(f"crontab {field}={spec!r}: a step must be at least 1")
        if span == "*":
            first, last = low, high
        elif "-" in span:
            first, last = (number(v) for v in span.split("-", 1))
        else:
            first = last = number(span)
            if step_text:
                last = high
        if field == "day_of_week" and last == 7:
            last = 6 if first > 0 else 7  # Sunday may be written 7
        for value in range(first, last + 1, step):
            value = 0 if field == "day_of_week" and value == 7 else value
            if not low <= value <= high:
                raise ValueError(f"crontab {field}={spec!r}: {value} is out of {low}-{high}")
            values.add(value)
    return frozenset(values)


class crontab:
    """Cron-like ticks in the project's time zone (``CELERY_TIMEZONE`` or ``TIME_ZONE``).

    ``crontab(minute=0, hour="*/3")``, ``crontab(hour=7, minute=30, day_of_week="mon-fri")``.
    A tick must match every field (day_of_week and day_of_month both, as in Celery).
    """

    def __init__(
        self,
        minute: Any = "*",
        hour: Any = "*",
        day_of_week: Any = "*",
        day_of_month: Any = "*",
        month_of_year: Any = "*",
        **kwargs: Any,
    ) -> None:
        if kwargs:
            raise NotImplementedError(
                f"crontab({', '.join(kwargs)}=...) is not supported; the time zone is "
                "CELERY_TIMEZONE (or TIME_ZONE)"
            )
        self.minute = _parse(minute, 0, 59, {}, "minute")
        self.hour = _parse(hour, 0, 23, {}, "hour")
        self.day_of_week = _parse(day_of_week, 0, 6, _DAYS, "day_of_week")
        self.day_of_month = _parse(day_of_month, 1, 31, {}, "day_of_month")
        self.month_of_year = _parse(month_of_year, 1, 12, _MONTHS, "month_of_year")
        self._spec = (minute, hour, day_of_week, day_of_month, month_of_year)
        self.tz: tzinfo | None = None  # set by the beat from the configuration

    def __repr__(self) -> str:
        minute, hour, day_of_week, day_of_month, month = self._spec
        return f"<crontab: {minute} {hour} {day_of_month} {month} {day_of_week} (m/h/dM/MY/d)>"

    def _day_matches(self, day: datetime) -> bool:
        weekday = (day.weekday() + 1) % 7  # Celery and cron: Sunday is 0
        return (
            day.month in self.month_of_year
            and day.day in self.day_of_month
            and weekday in self.day_of_week
        )

    def next_after(self, moment: datetime) -> datetime:
        zone = self.tz or timezone.get_default_timezone()
        local = moment.astimezone(zone).replace(second=0, microsecond=0) + timedelta(minutes=1)
        day = local.replace(hour=0, minute=0)
        for _ in range(366 * 8):  # leap days and rare dates: eight years is plenty
            if self._day_matches(day):
                for hour in sorted(self.hour):
                    for minute in sorted(self.minute):
                        candidate = day.replace(hour=hour, minute=minute)
                        if candidate >= local:
                            return candidate.replace(tzinfo=zone).astimezone(UTC)
            day = (day + timedelta(days=1)).replace(hour=0, minute=0)
        raise ValueError(f"{self!r} never matches a date")


def maybe_schedule(value: Any) -> schedule | crontab:
    """A ``beat_schedule`` entry's ``schedule``: a crontab, a schedule, a timedelta or seconds."""
    if isinstance(value, (schedule, crontab)):
        return value
    if isinstance(value, (int, float, timedelta)) and not isinstance(value, bool):
        return schedule(value)
    raise NotImplementedError(
        f"beat schedule {value!r} is not supported: use crontab(...), a timedelta or a "
        "number of seconds (solar schedules are not supported)"
    )


__all__ = ["crontab", "maybe_schedule", "schedule"]
