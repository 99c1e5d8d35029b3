"""Periodic tasks: ``beat_schedule`` entries submitted at their ticks, exactly once each.

Each tick of an entry is submitted as a job whose key names the entry and the tick
(``beat-<hash of the entry name>-<tick's Unix time>``). Any number of schedulers
(``gearbeat``, or ``gearworker --beat`` on every worker host) may run at once: the
ones that submit the same tick submit the same key, which the job record (its unique
(function, key)) and gearmand turn into one job. No leader election, no lock, and a
scheduler that dies costs nothing while another runs.

Ticks are absolute (crontab times in ``CELERY_TIMEZONE``/``TIME_ZONE``; intervals are
multiples of the interval since the Unix epoch), so every scheduler computes the same
ones. A scheduler submits the ticks that come while it runs; a tick missed because no
scheduler ran then is skipped, as Celery beat skips it.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from django.utils import timezone

from .schedules import crontab, maybe_schedule, schedule

logger = logging.getLogger("django_gearattach.beat")

_ENTRY_KEYS = {"task", "schedule", "args", "kwargs", "options", "relative"}


def tick_key(entry: str, tick: datetime) -> str:
    """The job key of one tick of one entry (at most 63 bytes, as gearmand requires)."""
    digest = hashlib.sha256(entry.encode()).hexdigest()[:24]
    return f"beat-{digest}-{int(tick.timestamp())}"


@dataclass
class Entry:
    name: str
    task: str
    schedule: schedule | crontab
    args: list[Any] = field(default_factory=list)
    kwargs: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    next_tick: datetime | None = None

    @classmethod
    def from_config(cls, name: str, value: Mapping[str, Any], zone: Any) -> Entry:
        unknown = set(value) - _ENTRY_KEYS
        if unknown:
            raise NotImplementedError(
                f"beat_schedule[{name!r}] has {sorted(unknown)}: an entry takes task, "
                "schedule, args, kwargs and options"
            )
        if value.get("relative"):
            raise NotImplementedError(
                f"beat_schedule[{name!r}]: relative=True is not supported; ticks are "
                "absolute so that every scheduler submits the same ones"
            )
        if "task" not in value or "schedule" not in value:
            raise ValueError(f"beat_schedule[{name!r}] needs 'task' and 'schedule'")
        when = maybe_schedule(value["schedule"])
        if isinstance(when, crontab) and when.tz is None:
            when.tz = zone
        options = dict(value.get("options") or {})
        bad = set(options) - {"priority", "ignore_result"}
        if bad:
            raise NotImplementedError(
                f"beat_schedule[{name!r}]['options'] has {sorted(bad)}: only priority and "
                "ignore_result are supported (each tick is its own job key)"
            )
        return cls(
            name,
            str(value["task"]),
            when,
            list(value.get("args") or ()),
            dict(value.get("kwargs") or {}),
            options,
        )


def load_entries() -> list[Entry]:
    """The ``beat_schedule`` of the Celery apps (or ``CELERY_BEAT_SCHEDULE``)."""
    from .config import configuration

    zone_name = configuration("timezone")
    zone = ZoneInfo(zone_name) if zone_name else timezone.get_default_timezone()
    config = configuration("beat_schedule", {}) or {}
    return [Entry.from_config(name, value, zone) for name, value in config.items()]


class Beat:
    """Submits each entry's ticks as they come, until :meth:`stop`."""

    def __init__(self, entries: list[Entry] | None = None) -> None:
        self.entries = load_entries() if entries is None else entries
        self._stop = threading.Event()
        self.submitted = 0

    def stop(self) -> None:
        self._stop.set()

    def tick(self, now: datetime | None = None) -> float:
        """Submit every entry whose tick has come; return seconds until the next one."""
        now = now or timezone.now()
        for entry in self.entries:
            if entry.next_tick is None:
                entry.next_tick = entry.schedule.next_after(now)
            while entry.next_tick <= now:
                self._submit(entry, entry.next_tick)
                entry.next_tick = entry.schedule.next_after(entry.next_tick)
        upcoming = min((e.next_tick for e in self.entries if e.next_tick), default=None)
        if upcoming is None:
            return 60.0
        return max((upcoming - timezone.now()).total_seconds(), 0.0)

    def _submit(self, entry: Entry, tick: datetime) -> None:
        from .canvas import submit_signature

        key = tick_key(entry.name, tick)
        try:
            submit_signature(entry.task, entry.args, entry.kwargs, key, entry.options)
        except Exception:
            logger.exception("beat: %s (%s) at %s not submitted", entry.name, entry.task, tick)
            return
        self.submitted += 1
        logger.info("beat: %s (%s) tick %s, key %s", entry.name, entry.task, tick, key)

    def run(self) -> None:
        if not self.entries:
            logger.warning("beat: no beat_schedule entries; nothing to do")
        names = ", ".join(f"{e.name} ({e.schedule!r})" for e in self.entries)
        logger.info("beat: scheduling %s", names or "nothing")
        while not self._stop.is_set():
            try:
                wait = self.tick()
            except Exception:
                logger.exception("beat: tick failed")
                wait = 1.0
            self._stop.wait(min(wait, 60.0))


def start_thread() -> Beat:
    """Run a :class:`Beat` in a daemon thread of this process (``gearworker --beat``)."""
    from .app import discover

    discover()
    beat = Beat()
    thread = threading.Thread(target=_run_closing, args=(beat,), name="gearbeat", daemon=True)
    thread.start()
    return beat


def _run_closing(beat: Beat) -> None:
    from django.db import connections

    try:
        beat.run()
    finally:
        connections.close_all()
