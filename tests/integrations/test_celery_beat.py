"""Periodic tasks: crontab and interval ticks, and one job per tick with several schedulers."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from django.core.management import CommandError, call_command
from django.db import close_old_connections

from django_gearattach.celery.beat import Beat, load_entries, tick_key
from django_gearattach.celery.schedules import crontab, maybe_schedule, schedule
from django_gearattach.models import Job, Status
from tests.conftest import executions
from tests.helpers import wait_until

UTC_ZONE = ZoneInfo("UTC")


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def utc_crontab(**fields: object) -> crontab:
    cron = crontab(**fields)
    cron.tz = UTC_ZONE
    return cron


@pytest.mark.parametrize(
    ("fields", "after", "expected"),
    [
        ({}, "2026-03-01T10:15:30", "2026-03-01T10:16:00"),
        ({"minute": "*/15"}, "2026-03-01T10:15:00", "2026-03-01T10:30:00"),
        ({"minute": 0, "hour": "*/3"}, "2026-03-01T10:15:00", "2026-03-01T12:00:00"),
        # Saturday -> Monday, as crontab(hour=7, minute=30, day_of_week="mon-fri")
        (
            {"minute": 30, "hour": 7, "day_of_week": "mon-fri"},
            "2026-02-28T08:00:00",
            "2026-03-02T07:30:00",
        ),
        (
            {"minute": 0, "hour": 0, "day_of_month": "1", "month_of_year": "jan"},
            "2026-03-01T00:00:00",
            "2027-01-01T00:00:00",
        ),
        (
            {"minute": 0, "hour": 0, "day_of_week": "sun,7"},
            "2026-03-01T00:00:00",
            "2026-03-08T00:00:00",
        ),
    ],
)
def test_crontab_next_tick(fields, after, expected):
    assert utc_crontab(**fields).next_after(at(after)) == at(expected)


def test_crontab_uses_the_configured_time_zone(settings):
    settings.CELERY_TIMEZONE = "Europe/Paris"
    settings.CELERY_BEAT_SCHEDULE = {"e": {"task": "t", "schedule": crontab(minute=0, hour=9)}}
    [entry] = load_entries()
    # 09:00 in Paris in June is 07:00 UTC.
    assert entry.schedule.next_after(at("2026-06-01T06:00:00")) == at("2026-06-01T07:00:00")


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"minute": "61"}, "out of 0-59"),
        ({"hour": "a-b"}, "not a number"),
        ({"minute": "*/0"}, "step must be at least 1"),
        ({"nowfun": object()}, "not supported"),
    ],
)
def test_bad_crontabs_are_clear_errors(fields, message):
    with pytest.raises((ValueError, NotImplementedError), match=message):
        crontab(**fields)


def test_interval_ticks_are_multiples_of_the_interval():
    every = schedule(timedelta(seconds=10))
    assert every.next_after(at("2026-03-01T10:15:03")) == at("2026-03-01T10:15:10")
    assert every.next_after(at("2026-03-01T10:15:10")) == at("2026-03-01T10:15:20")
    every_30 = maybe_schedule(30.0)
    assert isinstance(every_30, schedule)
    assert every_30.seconds == 30.0
    with pytest.raises(NotImplementedError, match="solar"):
        maybe_schedule("sunrise")


def test_beat_schedule_entries_are_validated(settings):
    settings.CELERY_BEAT_SCHEDULE = {"x": {"task": "t", "schedule": 5, "relative": True}}
    with pytest.raises(NotImplementedError, match="relative=True"):
        load_entries()
    settings.CELERY_BEAT_SCHEDULE = {"x": {"task": "t", "schedule": 5, "options": {"queue": "q"}}}
    with pytest.raises(NotImplementedError, match=r"\['queue'\]"):
        load_entries()
    settings.CELERY_BEAT_SCHEDULE = {"x": {"task": "t", "schedule": 5, "expires": 3}}
    with pytest.raises(NotImplementedError, match="expires"):
        load_entries()


def test_tick_keys_fit_gearmand():
    key = tick_key("a very long entry name " * 10, at("2026-03-01T10:15:00"))
    assert len(key.encode()) <= 63


@pytest.mark.django_db(transaction=True)
def test_gearbeat_without_a_schedule_is_an_error(settings):
    settings.CELERY_BEAT_SCHEDULE = {}
    with pytest.raises(CommandError, match="no periodic tasks"):
        call_command("gearbeat")


@pytest.mark.django_db(transaction=True)
def test_several_schedulers_submit_each_tick_once(settings, gearmand, worker, log_path):
    settings.CELERY_BEAT_SCHEDULE = {
        "record-every-second": {"task": "tests.record", "schedule": 1.0, "args": [str(log_path)]}
    }
    beats = [Beat(), Beat(), Beat()]

    def run(beat: Beat) -> None:
        try:
            beat.run()
        finally:
            close_old_connections()

    threads = [threading.Thread(target=run, args=(b,), daemon=True) for b in beats]
    for thread in threads:
        thread.start()
    time.sleep(3.5)
    for beat in beats:
        beat.stop()
    for thread in threads:
        thread.join(5)
    assert sum(b.submitted for b in beats) >= 3 * 3  # every scheduler submitted every tick
    ticks = Job.objects.filter(function="tests.record")
    keys = list(ticks.values_list("key", flat=True))
    assert len(keys) >= 3
    assert len(set(keys)) == len(keys)
    assert all(key.startswith("beat-") for key in keys)
    wait_until(lambda: ticks.filter(status=Status.COMPLETE).count() == len(keys))
    assert len(executions(log_path)) == len(keys)  # one run per tick
