"""Time the recovery sweep over a million records (python docs/_tools/recovery_million.py).

Uses the PostgreSQL database ``RECOVERY_BENCH_DB`` (default
``gearattach_recovery_million``) on ``RECOVERY_BENCH_PG`` (default
postgres://postgres@127.0.0.1:5432), migrated and filled once: a million records,
of which 1% are active (2,000 scheduled, 5,000 queued, 3,000 running: half of these
with a live claim, half with an expired one) and the rest finished. A gearmand of its
own (an empty queue: every active record is lost) answers the status requests.

Prints the plan of the batch query, the time of one pass that only suspects (the
first sight of a lost job), of one pass that resubmits (past the grace period), and
of a round over every active record (``gearattach recover`` with no grace), each
with the records read.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ROWS = int(os.environ.get("RECOVERY_BENCH_ROWS", "1000000"))
BASE = os.environ.get("RECOVERY_BENCH_PG", "postgres://postgres@127.0.0.1:5432")
NAME = os.environ.get("RECOVERY_BENCH_DB", "gearattach_recovery_million")

FILL = """
INSERT INTO django_gearattach_job (
    id, function, key, status, priority, arguments, progress_numerator,
    progress_denominator, data, result, error, traceback, server, handle, owner_id,
    session_hash, attempts, worker_host, worker_pid, created_at, started_at, finished_at,
    exception_module, exception_qualname, retries, recoveries, execution, lease_until,
    scheduled_for)
SELECT
    md5(i::text || 'id')::uuid,
    'app.task' || (i %% 20),
    md5(i::text),
    CASE WHEN i %% 100 = 0 THEN
        (ARRAY['scheduled','scheduled','queued','queued','queued','queued','queued',
               'running','running','running'])[1 + (i / 100) %% 10]
    ELSE (ARRAY['complete','complete','complete','failed','lost','cancelled'])[1 + i %% 6]
    END,
    'normal', '{"args": [1, 2], "kwargs": {}}'::jsonb, 0, 0, NULL, NULL,
    '', '', %(server)s, '', NULL, '', CASE WHEN i %% 100 = 0 THEN 0 ELSE 1 END,
    'worker-1', 4000, now() - make_interval(secs => i * 3), NULL, NULL,
    '', '', 0, 0, md5(i::text || 'x'),
    CASE WHEN (i / 100) %% 2 = 0 THEN now() + interval '1 hour'
         ELSE now() - interval '1 hour' END,
    now() + interval '1 day'
FROM generate_series(1, %(rows)s) AS i
"""


def main() -> None:
    import psycopg

    with psycopg.connect(f"{BASE}/postgres", autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [NAME]).fetchone():
            conn.execute(f"CREATE DATABASE {NAME}")
    os.environ.update(
        DJANGO_SETTINGS_MODULE="tests.settings",
        DATABASE_URL=f"{BASE}/{NAME}",
        GEARATTACH_TEST_DATABASE=NAME,
    )
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    import logging

    from django.conf import settings
    from django.core.management import call_command
    from django.db import connection

    from django_gearattach.models import Job
    from django_gearattach.recovery import Sweeper
    from django_gearattach.testing import Gearmand

    logging.getLogger("django_gearattach").setLevel(logging.ERROR)
    call_command("migrate", verbosity=0)
    with Gearmand() as gearmand:
        settings.GEARATTACH = {**settings.GEARATTACH, "SERVERS": [gearmand.address]}
        with connection.cursor() as cursor:
            cursor.execute("DELETE FROM django_gearattach_job")
            cursor.execute(FILL, {"rows": ROWS, "server": gearmand.address})
            cursor.execute("ANALYZE django_gearattach_job")
        total = Job.objects.count()
        active = Job.objects.active().count()
        print(f"records: {total:,}, active: {active:,}, gearmand empty (all lost)")
        sweeper = Sweeper()
        query = sweeper._batch_query("queued")
        plan = query.explain()
        print("batch query plan (queued, first batch):")
        for line in plan.splitlines():
            print("   ", line)

        def timed(label: str, call):  # type: ignore[no-untyped-def]
            start = time.perf_counter()
            value = call()
            print(f"{label:58} {1000 * (time.perf_counter() - start):8.1f} ms")
            return value

        sweeper.grace = 3600.0
        actions = timed("one pass, suspecting (reads 3 x 500, asks gearmand)", sweeper.sweep)
        assert actions == []
        sweeper = Sweeper(grace=0)
        actions = timed("one pass, resubmitting (grace passed)", sweeper.sweep)
        print(f"    {len(actions)} resubmitted")
        sweeper = Sweeper(grace=3600.0)

        def round_over_all() -> int:
            read = 0
            for records in sweeper.batches():
                read += len(records)
                sweeper.check(records)
            return read

        read = timed("a round over every active record (suspecting)", round_over_all)
        print(f"    {read:,} records read in batches of 500 per status")


if __name__ == "__main__":
    main()
