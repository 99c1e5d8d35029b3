"""The user-shaped rows: the API called the way its users call it.

(a) ``submit()`` then ``attach()`` to the outcome, one job at a time; (b) sync
``submit()`` in a loop for no-op jobs, then ``attach()`` to each in order; (c) the same
with five-step progress jobs; (d) ``attach()`` to a finished job; (e) start latency:
every worker busy, jobs queued with attachers, from the moment a worker starts a job
(its own clock) to its attacher's first event. Row (f), the raw floor, is in
:mod:`.floor`. These run inside the e2e client process, Django configured.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from ..tasks import task

NOOP = "gearattach.bench.noop"
STEPS = "gearattach.bench.steps"
GATE = "gearattach.bench.gate"
PROBE = "gearattach.bench.probe"


@task(name=NOOP)
def noop() -> None:
    return None


@task(name=STEPS, bind=True)
def steps(job: Any) -> None:
    for step in range(1, 6):
        job.progress(step, 5)


@task(name=GATE)
def gate(path: str) -> None:
    """Keep a worker busy until ``path`` exists."""
    deadline = time.monotonic() + 60
    while not Path(path).exists() and time.monotonic() < deadline:
        time.sleep(0.001)


@task(name=PROBE)
def probe() -> None:
    return None


def _outcome(job: Any) -> str:
    from ..attachment import attach

    last = None
    for event in attach(job, timeout=60):
        last = event
    return last.event if last is not None else "none"


def one_at_a_time(count: int) -> list[float]:
    """Row (a): seconds from ``submit()`` to the outcome, one job at a time."""
    from ..submission import submit

    latencies = []
    for _ in range(count):
        started = time.perf_counter()
        outcome = _outcome(submit(NOOP))
        latencies.append(time.perf_counter() - started)
        if outcome != "complete":
            raise RuntimeError(f"a job ended {outcome}")
    return latencies


def submit_then_attach(function: str, count: int) -> tuple[float, list[str]]:
    """Rows (b) and (c): jobs/s of a submit loop then an attach to each, and their keys."""
    from ..submission import submit

    started = time.perf_counter()
    jobs = [submit(function) for _ in range(count)]
    outcomes = [_outcome(job) for job in jobs]
    elapsed = time.perf_counter() - started
    failed = [o for o in outcomes if o != "complete"]
    if failed:
        raise RuntimeError(f"{len(failed)} jobs did not complete: {failed[:3]}")
    return count / elapsed, [job.key for job in jobs]


def attach_finished(keys: list[str]) -> list[float]:
    """Row (d): seconds for ``attach(function, key)`` of a finished job to yield its outcome."""
    from ..attachment import attach

    latencies = []
    for key in keys:
        started = time.perf_counter()
        events = list(attach(NOOP, key))
        latencies.append(time.perf_counter() - started)
        if [e.event for e in events] != ["complete"]:
            raise RuntimeError(f"attach to a finished job gave {events}")
    return latencies


def start_latency(count: int, workers: int, gate_path: Path) -> dict[str, float]:
    """Row (e): each probe job's key and the wall-clock time its attacher heard from it.

    The workers are kept busy by gate jobs while ``count`` probe jobs are submitted and
    attached to; then the gate opens. The workers record when they start each probe.
    """
    from ..clients import get_client
    from ..gearman.rendezvous import Address
    from ..models import Job, Status
    from ..submission import submit

    blockers = [submit(GATE, [str(gate_path)]) for _ in range(workers)]
    while Job.objects.filter(pk__in=[b.pk for b in blockers], status=Status.RUNNING).count() < (
        workers
    ):
        time.sleep(0.01)
    jobs = [submit(PROBE) for _ in range(count)]
    heard: dict[str, float] = {}

    async def follow(job: Any) -> None:
        from ..attachment import aattach

        async for event in aattach(job, timeout=60):
            heard.setdefault(job.key, time.time())
            if event.terminal and event.event != "complete":
                raise RuntimeError(f"probe job ended {event}")

    async def main() -> None:
        followers = [asyncio.create_task(follow(job)) for job in jobs]
        client = get_client()
        uniques = [job.key.encode() for job in jobs]
        address = Address.parse(jobs[0].server)
        while True:  # every attacher holds its job before the gate opens
            statuses = await asyncio.to_thread(client.status_unique_many, address, uniques)
            if all(s.clients >= 1 for s in statuses):
                break
            await asyncio.sleep(0.01)
        gate_path.touch()
        await asyncio.gather(*followers)

    asyncio.run(main())
    for blocker in blockers:
        _outcome(blocker)
    return heard


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]
