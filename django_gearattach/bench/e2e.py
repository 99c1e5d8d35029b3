"""End to end: submit, worker, record and an attacher receiving completion.

Runs in a process of its own per database (Django is configured once per process):
``python -m django_gearattach.bench.e2e client|worker DB_URL GEARMAND_ADDRESS ...``.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from typing import Any

import django
from django.conf import settings

from ..tasks import task
from ..testing import wait_for_workers

FUNCTION = "gearattach.bench.noop"
QUERIES = {"count": 0}


@task(name=FUNCTION)
def noop() -> None:
    return None


def database(url: str) -> dict[str, Any]:
    """``sqlite:////path`` or ``postgres://...?server_side_binding=true&...``, read by
    dj-database-url (query parameters become typed OPTIONS)."""
    import dj_database_url

    settings: dict[str, Any] = dict(dj_database_url.parse(url, conn_max_age=None))
    if settings["ENGINE"] == "django.db.backends.sqlite3":
        settings["OPTIONS"] = {
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            "transaction_mode": "IMMEDIATE",
            "timeout": 30,
        }
    return settings


def configure(url: str, server: str) -> None:
    settings.configure(
        INSTALLED_APPS=["django.contrib.contenttypes", "django.contrib.auth", "django_gearattach"],
        DATABASES={"default": database(url)},
        USE_TZ=True,
        GEARATTACH={"SERVERS": [server], "PROGRESS_WRITE_INTERVAL": 1.0},
        LOGGING_CONFIG=None,
    )
    django.setup()
    from django.db.backends.signals import connection_created

    def count(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        QUERIES["count"] += 1
        return execute(sql, params, many, context)

    def install(sender: Any, connection: Any, **kwargs: Any) -> None:
        if count not in connection.execute_wrappers:
            connection.execute_wrappers.append(count)

    connection_created.connect(install, weak=False)


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run_worker(url: str, server: str, report: str) -> None:
    configure(url, server)
    from ..gearman.routing import Address
    from ..worker import Worker

    worker = Worker([noop], [Address.parse(server)])
    signal.signal(signal.SIGTERM, lambda *_: worker.stop())
    worker.run()
    with open(report, "w") as out:
        json.dump(
            {
                "jobs": worker.jobs_done,
                "folded": worker.jobs_folded,
                "queries": QUERIES["count"],
                "cpu": cpu_seconds(),
            },
            out,
        )


async def _drive(jobs: int, window: int) -> float:
    from ..attachment import aattach
    from ..submission import asubmit

    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(jobs):
        queue.put_nowait(i)
    failures = []

    async def one_lane() -> None:
        while not queue.empty():
            queue.get_nowait()
            job = await asubmit(FUNCTION)
            last = None
            async for event in aattach(job, timeout=60):
                last = event
            if last is None or last.event != "complete":
                failures.append(last)

    started = time.perf_counter()
    await asyncio.gather(*(one_lane() for _ in range(window)))
    elapsed = time.perf_counter() - started
    if failures:
        raise RuntimeError(f"{len(failures)} jobs did not complete: {failures[:3]}")
    return jobs / elapsed


def run_client(url: str, server: str, jobs: int, window: int, workers: int) -> dict[str, Any]:
    configure(url, server)
    from django.core.management import call_command

    from ..models import Job

    call_command("migrate", verbosity=0)
    reports = [tempfile.mktemp(prefix="gearattach-bench-") for _ in range(workers)]
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "django_gearattach.bench.e2e", "worker", url, server, report]
        )
        for report in reports
    ]
    try:
        wait_for_workers(server, FUNCTION, workers)
        asyncio.run(_drive(min(300, jobs), window))  # warm-up
        Job.objects.all().delete()
        before, cpu_before = QUERIES["count"], cpu_seconds()
        rate = asyncio.run(_drive(jobs, window))
        client_queries = QUERIES["count"] - before
        client_cpu = cpu_seconds() - cpu_before
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            proc.wait(30)
    worker_jobs = worker_folded = worker_queries = worker_cpu = 0.0
    for report in reports:
        with open(report) as data:
            figures = json.load(data)
        os.unlink(report)
        worker_jobs += figures["jobs"]
        worker_folded += figures["folded"]
        worker_queries += figures["queries"]
        worker_cpu += figures["cpu"]
    complete = Job.objects.filter(status="complete").count()
    return {
        "rate": rate,
        "complete": complete,
        "client_queries_per_job": client_queries / jobs,
        "worker_queries_per_job": worker_queries / max(worker_jobs, 1),
        "worker_folded_share": worker_folded / max(worker_jobs, 1),
        "client_cpu_ms_per_job": client_cpu * 1000 / jobs,
        "worker_cpu_ms_per_job": worker_cpu * 1000 / max(worker_jobs, 1),
    }


def main(argv: list[str]) -> None:
    role, url, server, *rest = argv
    if role == "worker":
        run_worker(url, server, rest[0])
    else:
        jobs, window, workers = (int(x) for x in rest)
        print(json.dumps(run_client(url, server, jobs, window, workers)))


if __name__ == "__main__":
    main(sys.argv[1:])
