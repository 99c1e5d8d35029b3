"""Time the admin dashboard on a table of a million jobs (python docs/_tools/dashboard_million.py).

Uses PostgreSQL (``ADMIN_BENCH_PG``, default postgres://postgres@127.0.0.1:5432) with
two databases of its own, created and filled once:

* ``gearattach_dashboard_year``: a job finished every 31 seconds for a year (the
  table of ``admin_million.py``): about 116 jobs in the last hour, 2,800 in the day;
* ``gearattach_dashboard_day``: the million jobs all finished in the last 24 hours
  (11.6 a second): 42,000 in the last hour, the whole table in the day.

Prints, per table and period, the time of each of the dashboard's three queries, of
the whole page request, and of a live feed's later refreshes, which read the day's
per-minute counts only for the last minutes (warm, best of three).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ROWS = int(os.environ.get("ADMIN_BENCH_ROWS", "1000000"))
BASE = os.environ.get("ADMIN_BENCH_PG", "postgres://postgres@127.0.0.1:5432")
TABLES = {"gearattach_dashboard_year": 31.0, "gearattach_dashboard_day": 86400 / ROWS}

FILL = """
INSERT INTO django_gearattach_job (
    id, function, key, status, priority, arguments, progress_numerator,
    progress_denominator, data, result, error, traceback, server, handle, owner_id,
    session_hash, attempts, worker_host, worker_pid, created_at, started_at, finished_at,
    exception_module, exception_qualname, retries)
SELECT
    md5(i::text || 'id')::uuid,
    'app.task' || (i %% 20),
    md5(i::text),
    (ARRAY['complete','complete','complete','complete','complete','complete',
           'failed','lost','cancelled'])[1 + i %% 9],
    'normal', '{"args": [1, 2], "kwargs": {}}'::jsonb, 10, 10, NULL, '{"ok": true}'::jsonb,
    '', '', '10.0.0.' || (i %% 3) || ':4730', '', NULL, '', 1, 'worker-1', 4000 + i %% 4,
    now() - make_interval(secs => i * %(spacing)s)
          - make_interval(secs => 1 + (i %% 97) / 10.0 + (i %% 13)),
    now() - make_interval(secs => i * %(spacing)s) - make_interval(secs => (i %% 97) / 10.0),
    now() - make_interval(secs => i * %(spacing)s),
    '', '', 0
FROM generate_series(1, %(rows)s) AS i
"""


def main() -> None:
    import psycopg

    sys.path.insert(0, str(ROOT))
    with psycopg.connect(f"{BASE}/postgres", autocommit=True) as conn:
        for name in TABLES:
            if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
                conn.execute(f"CREATE DATABASE {name}")
    print(
        f"{'table':26} {'period':6} {'per minute':>11} {'percentiles':>12} "
        f"{'outcomes':>9} {'page':>7}"
    )
    for name, spacing in TABLES.items():
        result = os.popen(f"{sys.executable} {__file__} --one {name} {spacing}").read()
        print(result, end="")


def one(name: str, spacing: float) -> None:
    os.environ.update(
        DJANGO_SETTINGS_MODULE="tests.settings",
        DATABASE_URL=f"{BASE}/{name}",
        GEARATTACH_TEST_DATABASE=name,
        GEARATTACH_SERVERS="127.0.0.1:1",  # nothing listens: the servers panel says so
    )
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.db import connection
    from django.test import Client
    from django.utils import timezone

    from django_gearattach.dashboard.queries import (
        PERIODS,
        MinuteCounts,
        outcomes,
        per_minute,
        percentiles,
        snapshot,
    )
    from django_gearattach.models import Job

    settings.ALLOWED_HOSTS = ["*"]
    call_command("migrate", verbosity=0)
    if Job.objects.count() != ROWS:
        Job.objects.all().delete()
        started = time.monotonic()
        with connection.cursor() as cursor:
            cursor.execute(FILL, {"rows": ROWS, "spacing": spacing})
            cursor.execute("ANALYZE django_gearattach_job")
        print(
            f"filled {name} with {ROWS} rows in {time.monotonic() - started:.1f} s",
            file=sys.stderr,
        )
    admin, _ = get_user_model().objects.get_or_create(
        username="bench-admin", defaults={"is_staff": True, "is_superuser": True}
    )
    client = Client()
    client.force_login(admin)

    def best(call) -> float:
        times = []
        for _ in range(3):
            started = time.monotonic()
            call()
            times.append(time.monotonic() - started)
        return min(times) * 1000

    now = timezone.now()
    day_minutes = best(lambda: per_minute(now - PERIODS["day"]))
    for period, span in PERIODS.items():
        since = now - span
        p = best(lambda since=since: percentiles(since))
        o = best(lambda since=since: outcomes(since))
        url = f"/admin/django_gearattach/job/dashboard/?period={period}"
        client.get(url)
        page = best(lambda url=url: client.get(url))
        assert client.get(url).status_code == 200
        minutes = MinuteCounts()
        snapshot(period, minutes=minutes)  # a feed's first refresh reads the whole day
        live = best(lambda period=period, minutes=minutes: snapshot(period, minutes=minutes))
        print(
            f"{name:26} {period:6} {day_minutes:9.0f}ms {p:10.0f}ms {o:7.0f}ms {page:6.0f}ms"
            f" {live:8.0f}ms"
        )


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--one":
        one(sys.argv[2], float(sys.argv[3]))
    else:
        main()
