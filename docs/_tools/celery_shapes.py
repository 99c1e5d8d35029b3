"""The benchmark's user-shaped rows (a)-(d), run against Celery for comparison.

Celery called the way its users call it: ``.delay()`` then ``.get()``, a Redis broker
and the Redis result backend (which pushes results through pub/sub), two prefork
worker processes. Needs ``pip install celery redis`` and a Redis server::

    $ python docs/_tools/celery_shapes.py [redis://127.0.0.1:6379/11]

It starts its own ``celery worker`` on a queue of its own (nothing else in that Redis
database is touched), prints the rows in the format of
``python -m django_gearattach.bench``, and stops the worker. Run both in the same
session: figures are only comparable side by side on one machine.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import celery
from celery import Celery

URL = os.environ.get("CELERY_SHAPES_REDIS", "redis://127.0.0.1:6379/11")
QUEUE = os.environ.get("CELERY_SHAPES_QUEUE", "gearattach-shapes")

app = Celery("celery_shapes", broker=URL, backend=URL)
app.conf.update(
    task_default_queue=QUEUE,
    result_expires=300,
    worker_prefetch_multiplier=4,
    broker_connection_retry_on_startup=True,
)


@app.task
def noop() -> None:
    return None


@app.task(bind=True)
def steps(self) -> None:  # type: ignore[no-untyped-def]
    for step in range(1, 6):
        self.update_state(state="PROGRESS", meta={"current": step, "total": 5})


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))]


def ms(values: list[float]) -> str:
    return f"{percentile(values, 0.5) * 1000:.2f} / {percentile(values, 0.99) * 1000:.2f}"


def one_at_a_time(count: int) -> list[float]:
    latencies = []
    for _ in range(count):
        started = time.perf_counter()
        noop.delay().get(timeout=60)
        latencies.append(time.perf_counter() - started)
    return latencies


def delay_then_get(task: object, count: int) -> tuple[float, list[str]]:
    started = time.perf_counter()
    results = [task.delay() for _ in range(count)]  # type: ignore[attr-defined]
    for result in results:
        result.get(timeout=120)
    return count / (time.perf_counter() - started), [r.id for r in results]


def get_finished(ids: list[str]) -> list[float]:
    latencies = []
    for task_id in ids:
        started = time.perf_counter()
        app.AsyncResult(task_id).get(timeout=10)
        latencies.append(time.perf_counter() - started)
    return latencies


def main() -> int:
    here = Path(__file__).resolve().parent
    worker = subprocess.Popen(
        [
            *(sys.executable, "-m", "celery", "-A", "celery_shapes", "worker", "-Q", QUEUE),
            *("--concurrency", "2", "--pool", "prefork", "--loglevel", "WARNING"),
        ],
        cwd=here,
        env={**os.environ, "PYTHONPATH": str(here)},
        stdout=subprocess.DEVNULL,  # its banner; warnings and errors go to stderr
    )
    try:
        deadline = time.monotonic() + 60
        while not app.control.ping(timeout=1.0):
            if time.monotonic() > deadline:
                raise RuntimeError("the celery worker did not start")
        one_at_a_time(20)  # warm-up
        a = one_at_a_time(200)
        b, ids = delay_then_get(noop, 2000)
        c, _ = delay_then_get(steps, 500)
        d = get_finished(ids[:500])
    finally:
        worker.terminate()
        worker.wait(30)
    print(f"Celery {celery.__version__}, Redis broker and results, 2 prefork workers")
    print(f"(a) delay().get(), one at a time: p50 / p99 ms     {ms(a)}")
    print(f"(b) 2,000 no-op: delay() loop, then get() each: jobs/s  {b:.0f}")
    print(f"(c) 500 five-step progress jobs, same shape: jobs/s     {c:.0f}")
    print(f"(d) get() of a finished task: p50 / p99 ms          {ms(d)}")
    print(f"    (mean of (a): {statistics.mean(a) * 1000:.2f} ms)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
