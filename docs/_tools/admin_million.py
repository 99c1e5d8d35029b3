"""Time the admin's job list on a table of a million jobs (python docs/_tools/admin_million.py).

Uses PostgreSQL (``ADMIN_BENCH_PG``, default postgres://postgres@127.0.0.1:5432) with
a database of its own, ``gearattach_admin_bench``, which it creates and fills once.
Prints, per page, the number of queries and the time of the request and of its
slowest query.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ROWS = int(os.environ.get("ADMIN_BENCH_ROWS", "1000000"))
BASE = os.environ.get("ADMIN_BENCH_PG", "postgres://postgres@127.0.0.1:5432")
NAME = "gearattach_admin_bench"

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
    (ARRAY['complete','complete','complete','complete','failed','lost','cancelled',
           'running','queued'])[1 + i %% 9],
    'normal',
    '{"args": [1, 2], "kwargs": {}}'::jsonb,
    i %% 10, 10, NULL, '{"ok": true}'::jsonb, '', '',
    '10.0.0.' || (i %% 3) || ':4730', '', %(first_user)s + (i %% 100), '', 1,
    'worker-1', 4000 + i %% 4,
    now() - (i || ' seconds')::interval * 31,
    now() - (i || ' seconds')::interval * 31 + interval '1 second',
    now() - (i || ' seconds')::interval * 31 + interval '3 seconds',
    '', '', 0
FROM generate_series(1, %(rows)s) AS i
"""


def setup_database() -> None:
    import psycopg

    with psycopg.connect(f"{BASE}/postgres", autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [NAME]).fetchone()
        if not exists:
            conn.execute(f"CREATE DATABASE {NAME}")


def main() -> None:
    sys.path.insert(0, str(ROOT))
    setup_database()
    os.environ.update(
        DJANGO_SETTINGS_MODULE="tests.settings",
        DATABASE_URL=f"{BASE}/{NAME}",
        GEARATTACH_TEST_DATABASE=NAME,
    )
    import django

    django.setup()
    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    from django_gearattach.models import Job

    settings.ALLOWED_HOSTS = ["*"]
    call_command("migrate", verbosity=0)
    User = get_user_model()
    if Job.objects.count() != ROWS:
        Job.objects.all().delete()
        User.objects.filter(username__startswith="owner").delete()
        User.objects.bulk_create(User(username=f"owner{i}") for i in range(100))
        first = User.objects.filter(username__startswith="owner").order_by("pk").first()
        assert first is not None
        started = time.monotonic()
        with connection.cursor() as cursor:
            cursor.execute(FILL, {"rows": ROWS, "first_user": first.pk})
            cursor.execute("ANALYZE django_gearattach_job")
        print(f"filled {ROWS} rows in {time.monotonic() - started:.1f} s")
    admin, _ = User.objects.get_or_create(
        username="bench-admin", defaults={"is_staff": True, "is_superuser": True}
    )
    client = Client()
    client.force_login(admin)
    some_key = Job.objects.order_by("-created_at").values_list("key", flat=True)[500]
    pages = {
        "list (newest first)": "",
        "status = failed": "?status__exact=failed",
        "function = app.task7": "?function=app.task7",
        "server = 10.0.0.1:4730": "?server=10.0.0.1%3A4730",
        "search an exact key": f"?q={some_key}",
        "search an owner": "?q=owner42",
        "date hierarchy: a month": "?created_at__year=2026&created_at__month=6",
        "page 100": "?p=100",
    }
    url = "/admin/django_gearattach/job/"
    client.get(url)  # warm up
    print(f"{'page':28} {'queries':>7} {'request':>9} {'slowest query':>14}")
    for label, query in pages.items():
        with CaptureQueriesContext(connection) as queries:
            started = time.monotonic()
            response = client.get(url + query)
            elapsed = time.monotonic() - started
        assert response.status_code == 200, response.status_code
        slowest = max(float(q["time"]) for q in queries.captured_queries)
        print(f"{label:28} {len(queries):>7} {elapsed * 1000:>7.0f}ms {slowest * 1000:>12.0f}ms")


if __name__ == "__main__":
    main()
