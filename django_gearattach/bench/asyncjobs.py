"""``python -m django_gearattach.bench --async``: one worker process, many async jobs.

ONE worker process (a real :class:`~django_gearattach.worker.loop.Worker`, its asyncio
runner allowed all of them at once) runs 1,000 background jobs of an ``async def``
task that awaits ``asyncio.sleep(1)``. The jobs are scheduled for one moment after
the last submit (gearmand's SUBMIT_JOB_EPOCH), so they are all due together and the
submitter's speed is not measured. Printed beside the targets:

* wall time: from the first job's start to the last job's end, read from the
  records (the worker's start-up is not counted; submitting is not either);
* jobs in flight at the peak (from the records' start and end times);
* memory per job in flight: the worker's RSS sampled every 20 ms during the batch
  (``/proc/PID/status`` VmRSS), its peak minus its RSS before the batch (after a
  warm-up batch of 50), divided by the peak jobs in flight.

SQLite (WAL) in a temporary directory, or ``--db URL``.
"""

from __future__ import annotations

import asyncio
import math
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timedelta
from typing import Any

FUNCTION = "bench.async_sleep"
MODULE = "django_gearattach.bench.asyncjobs"
TARGET_WALL = 3.0
TARGET_KIB = 50.0


def _task() -> Any:
    from ..tasks import task

    @task(name=FUNCTION)
    async def async_sleep(seconds: float = 1.0) -> None:
        await asyncio.sleep(seconds)

    return async_sleep


def run_worker(url: str, server: str, concurrency: int) -> None:
    from .e2e import configure

    configure(url, server)
    from ..gearman.rendezvous import Address
    from ..worker.loop import Worker

    worker = Worker([_task()], [Address.parse(server)], async_concurrency=concurrency)
    signal.signal(signal.SIGTERM, lambda signum, frame: worker.stop())
    worker.run()


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def _overlap(intervals: list[tuple[float, float]]) -> int:
    edges = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    most = now = 0
    for _, step in edges:
        now += step
        most = max(most, now)
    return most


def _batch(count: int, seconds: float, run_at: datetime | None = None) -> list[str]:
    from ..submission import submit

    return [submit(FUNCTION, [seconds], run_at=run_at).key for _ in range(count)]


def _wait(keys: list[str], timeout: float) -> list[Any]:
    from ..models import Job

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = Job.objects.filter(function=FUNCTION, key__in=keys, status="complete").count()
        if done == len(keys):
            break
        time.sleep(0.1)
    return list(
        Job.objects.filter(function=FUNCTION, key__in=keys).values_list(
            "status", "started_at", "finished_at", "attempts"
        )
    )


def run_client(url: str, server: str, jobs: int) -> int:
    from .e2e import configure

    configure(url, server)
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    from django.utils import timezone

    from ..testing import wait_for_workers

    _task()
    proc = subprocess.Popen(
        [sys.executable, "-m", MODULE, "worker", url, server, str(jobs)],
        stderr=None if os.environ.get("BENCH_DEBUG") else subprocess.DEVNULL,
    )
    try:
        wait_for_workers(server, FUNCTION, 1)
        began = time.monotonic()
        _wait(_batch(50, 0.2), 30)  # warm-up: threads, connections, caches
        per_submit = (time.monotonic() - began) / 50
        time.sleep(0.5)
        before = _rss_kib(proc.pid)
        # Scheduled for one moment after the last submit: gearmand hands them all out
        # then, so the worker is measured, not the submitter.
        lead = math.ceil(jobs * per_submit * 1.5) + 2
        keys = _batch(jobs, 1.0, timezone.now() + timedelta(seconds=lead))
        peak = [before]
        stop = threading.Event()

        def sample() -> None:
            while not stop.wait(0.02):
                peak[0] = max(peak[0], _rss_kib(proc.pid))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        rows = _wait(keys, 120 + lead)
        stop.set()
        sampler.join()
    finally:
        proc.terminate()
        proc.wait(30)
    complete = [r for r in rows if r[0] == "complete"]
    intervals = [(r[1].timestamp(), r[2].timestamp()) for r in complete]
    wall = max(e for _, e in intervals) - min(s for s, _ in intervals) if intervals else 0.0
    in_flight = _overlap(intervals)
    per_job = (peak[0] - before) / in_flight if in_flight else float("nan")
    twice = sum(1 for r in rows if r[3] != 1)
    print(f"database: {url.split('://')[0]}; gearmand {server}; 1 worker process")
    print(f"{jobs} async jobs, each awaiting asyncio.sleep(1); ASYNC_CONCURRENCY={jobs}")
    print(f"  completed: {len(complete)} of {jobs}; run more than once: {twice}")
    ok_wall = wall <= TARGET_WALL
    print(f"  wall time, first start to last end: {wall:.2f} s   (target <= {TARGET_WALL:g} s)")
    print(f"  jobs in flight at the peak: {in_flight}")
    ok_mem = per_job <= TARGET_KIB
    print(
        f"  memory per job in flight: {per_job:.1f} KiB   (target <= {TARGET_KIB:g} KiB; "
        f"RSS delta: peak {peak[0]} KiB - {before} KiB before, over {in_flight} jobs)"
    )
    verdict = {True: "met", False: "MISSED"}
    print(f"  targets: wall {verdict[ok_wall]}, memory {verdict[ok_mem]}")
    return 0 if len(complete) == jobs and twice == 0 else 1


def main(jobs: int = 1000, db: str | None = None) -> int:
    from ..testing import Gearmand

    with Gearmand() as gearmand, tempfile.TemporaryDirectory() as tmp:
        url = db or f"sqlite:///{tmp}/bench.sqlite3"
        return subprocess.run(
            [sys.executable, "-m", MODULE, "client", url, gearmand.address, str(jobs)],
            check=False,
        ).returncode


if __name__ == "__main__":
    role, *rest = sys.argv[1:]
    if role == "worker":
        run_worker(rest[0], rest[1], int(rest[2]))
    else:
        sys.exit(run_client(rest[0], rest[1], int(rest[2])))
