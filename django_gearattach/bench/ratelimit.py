"""``python -m django_gearattach.bench.ratelimit``: does a rate limit hold over workers?

Starts a gearmand, N worker processes (real :class:`~django_gearattach.worker.Worker`
objects) and floods a task limited to ``--rate`` starts per second, while another
task's jobs are submitted at a steady pace. After ``--seconds`` it reads the job
records and prints: the limited task's starts per second over the measured window
(and its error against the limit), the busiest one-second window, and how the other
task's jobs fared meanwhile (completed, latency). SQLite by default; ``--db URL`` for
PostgreSQL.

    python -m django_gearattach.bench.ratelimit --rate 10 --workers 3 --seconds 60
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

LIMITED = "bench.limited"
OTHER = "bench.other"
MODULE = "django_gearattach.bench.ratelimit"


def _tasks(rate: float) -> list[Any]:
    from ..tasks import task

    @task(name=LIMITED, rate_limit=f"{rate:g}/s")
    def limited() -> None:
        time.sleep(0.02)

    @task(name=OTHER)
    def other() -> None:
        return None

    return [limited, other]


def _configure(url: str, server: str) -> None:
    from .e2e import configure

    configure(url, server)


def run_worker(url: str, server: str, rate: float) -> None:
    _configure(url, server)
    from ..gearman.routing import Address
    from ..worker import Worker

    worker = Worker(_tasks(rate), [Address.parse(server)])
    worker.run()


def run_client(url: str, server: str, rate: float, workers: int, seconds: float) -> None:
    _configure(url, server)
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    from ..models import Job
    from ..submission import submit
    from ..testing import wait_for_workers

    procs = [
        subprocess.Popen(
            [sys.executable, "-m", MODULE, "worker", url, server, str(rate)],
            stderr=None if os.environ.get("BENCH_DEBUG") else subprocess.DEVNULL,
        )
        for _ in range(workers)
    ]
    try:
        wait_for_workers(server, OTHER, workers)
        warmup = 5.0
        flood = int(rate * (seconds + warmup) * 1.5) + 20
        for _ in range(flood):  # far more than the limit lets start in the run
            submit(LIMITED)
        began = time.time()
        other_every = 0.05  # 20 other jobs a second
        submitted = 0
        while time.time() < began + warmup + seconds:
            submit(OTHER)
            submitted += 1
            time.sleep(other_every)
        time.sleep(1.0)
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(10)
    start, end = began + warmup, began + warmup + seconds
    starts = sorted(
        s.timestamp()
        for s in Job.objects.filter(function=LIMITED, started_at__isnull=False).values_list(
            "started_at", flat=True
        )
        if s is not None
    )
    window = [t for t in starts if start <= t < end]
    measured = len(window) / seconds
    busiest = max((sum(1 for t in window if s <= t < s + 1.0) for s in window), default=0)
    others = list(
        Job.objects.filter(function=OTHER, status="complete").values_list(
            "created_at", "finished_at"
        )
    )
    latencies = [(f - c).total_seconds() * 1000 for c, f in others if f is not None]
    print(f"database: {url.split('://')[0]}; gearmand {server}; {workers} worker processes")
    print(f"limit: {rate:g} starts/s of {LIMITED}; measured over {seconds:g} s after {warmup:g} s")
    print(f"  starts in the window: {len(window)}  ->  {measured:.2f}/s")
    print(f"  error against the limit: {100 * (measured - rate) / rate:+.1f}%")
    print(f"  busiest 1 s window: {busiest} starts")
    print(f"  limited jobs still waiting at the end: {flood - len(starts)} of {flood}")
    twice = Job.objects.filter(function=LIMITED, attempts__gt=1).count()
    print(f"  limited jobs started more than once: {twice}")
    print(f"other jobs ({OTHER}, {1 / other_every:g}/s submitted, no limit):")
    print(f"  completed: {len(others)} of {submitted}")
    if latencies:
        latencies.sort()
        print(
            f"  latency submit->finish: median {statistics.median(latencies):.1f} ms, "
            f"p95 {latencies[int(len(latencies) * 0.95) - 1]:.1f} ms, max {latencies[-1]:.1f} ms"
        )


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "worker":
        run_worker(sys.argv[2], sys.argv[3], float(sys.argv[4]))
        return
    parser = argparse.ArgumentParser(prog="python -m django_gearattach.bench.ratelimit")
    parser.add_argument("--rate", type=float, default=10.0, help="starts per second")
    parser.add_argument("--workers", type=int, default=3, help="worker processes")
    parser.add_argument("--seconds", type=float, default=60.0, help="measured window")
    parser.add_argument("--db", help="database URL (default: a scratch SQLite file)")
    options = parser.parse_args()
    from ..testing import Gearmand

    scratch = None
    url = options.db
    if url is None:
        scratch = tempfile.mkdtemp(prefix="gearattach-ratelimit-")
        url = f"sqlite:///{os.path.join(scratch, 'bench.sqlite3')}"
    server = Gearmand().start()
    try:
        run_client(url, server.address, options.rate, options.workers, options.seconds)
    finally:
        server.stop()


if __name__ == "__main__":
    main()
