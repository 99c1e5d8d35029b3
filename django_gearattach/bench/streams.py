"""One job's stream under load: ``python -m django_gearattach.bench --streams``.

On SQLite (a fresh database file in WAL mode), one gearmand and one worker process,
one job streams 10,000 chunks of about 20 bytes as fast as it can (each chunk carries
the time it was streamed) to N Python attachers (``aattach``, spread over a few
processes). Printed beside the issue's targets:

* the database statements per chunk of the run (every statement of the worker
  process's run threads, the recovery sweep's aside);
* each chunk's latency from ``stream()`` to each attacher, p50 and p99 (one host's
  clock), and whether every attacher got every chunk in order, none twice;
* the replay of an attacher that joins at chunk 5,000 (the task waits there), and of
  an ``attach()`` after the end: seconds from the call to the last replayed chunk.

Each role runs in a process of its own: ``python -m django_gearattach.bench.streams
main|worker|attach ...``; ``main`` prints a table, then one JSON line.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import django
from django.conf import settings

from ..testing import Gearmand, wait_for_workers
from .e2e import database

CHUNKS = 10_000
HALF = CHUNKS // 2
TARGETS = {"statements": 0.05, "p99_ms": 50.0, "replay_ms": 200.0}


def configure(db: str, server: str) -> None:
    settings.configure(
        INSTALLED_APPS=["django.contrib.contenttypes", "django.contrib.auth", "django_gearattach"],
        DATABASES={"default": database(f"sqlite:///{db}")},
        USE_TZ=True,
        SECRET_KEY=os.environ["GEARATTACH_BENCH_SECRET"],
        GEARATTACH={"SERVERS": [server]},
        LOGGING_CONFIG=None,
    )
    django.setup()
    from . import streamapp  # noqa: F401 (registers the task)


def _wait_for(path: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{path} never appeared")
        time.sleep(0.001)


# -- the roles ----------------------------------------------------------------------------------
def run_worker(db: str, server: str) -> None:
    """A worker that counts the statements of its run threads; prints the count at exit."""
    configure(db, server)
    from django.db.backends.signals import connection_created

    from ..gearman.rendezvous import Address
    from ..tasks import registered_tasks
    from ..worker.loop import Worker
    from .streamapp import STREAM

    counted = {"statements": 0}

    def count(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        if threading.current_thread().name != "gearattach-sweep":
            counted["statements"] += 1
        return execute(sql, params, many, context)

    def install(sender: Any, connection: Any, **kwargs: Any) -> None:
        connection.execute_wrappers.append(count)

    connection_created.connect(install)
    worker = Worker([registered_tasks()[STREAM]], [Address.parse(server)])
    signal.signal(signal.SIGTERM, lambda *_: worker.stop())
    worker.run()
    print(json.dumps(counted))


def run_attachers(db: str, server: str, key: str, count: int, ready: str) -> None:
    """``count`` aattach calls on the job; print each chunk's latency and the checks."""
    configure(db, server)
    from ..attachment import aattach
    from .streamapp import STREAM

    async def one() -> dict[str, Any]:
        latencies, seqs = [], []
        async for event in aattach(STREAM, key, timeout=300):
            if event.event == "chunk":
                latencies.append(time.time() - float(event.data.split("|")[0]))
                seqs.append(event.seq)
        return {"latencies": latencies, "in_order": seqs == list(range(1, CHUNKS + 1))}

    async def main() -> list[dict[str, Any]]:
        tasks = [asyncio.ensure_future(one()) for _ in range(count)]
        await asyncio.sleep(1.0)  # each has joined the running job (it waits on a gate)
        Path(ready).touch()
        return list(await asyncio.gather(*tasks))

    results = asyncio.run(main())
    print(
        json.dumps(
            {
                "latencies": [x for r in results for x in r["latencies"]],
                "complete": sum(r["in_order"] for r in results),
            }
        )
    )


# -- the orchestration ----------------------------------------------------------------------------
def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if ordered else 0.0


def _spawn(role: str, *args: str) -> subprocess.Popen[str]:
    cmd = [sys.executable, "-m", "django_gearattach.bench.streams", role, *args]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)


def _last_json(proc: subprocess.Popen[str], timeout: float = 300) -> dict[str, Any]:
    stdout, _ = proc.communicate(timeout=timeout)
    if proc.returncode:
        raise RuntimeError(f"a benchmark process failed ({proc.returncode})")
    return json.loads(stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def _replay_seconds(key: str, after: str | None, chunks: int) -> float:
    """Seconds from an ``attach()`` call to its ``chunks``-th chunk (the replay)."""
    from ..attachment import attach
    from .streamapp import STREAM

    began = time.perf_counter()
    got = 0
    for event in attach(STREAM, key, timeout=60, after=after):
        if event.event == "chunk":
            got += 1
            if got == chunks:
                return time.perf_counter() - began
    raise RuntimeError(f"the replay gave {got} chunks, not {chunks}")


def run_main(attachers: int) -> dict[str, Any]:
    os.environ.setdefault("GEARATTACH_BENCH_SECRET", secrets.token_hex(32))
    load = os.getloadavg()[0]
    with Gearmand() as gearmand, tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        db, server = str(tmp / "bench.sqlite3"), gearmand.address
        configure(db, server)
        from django.core.management import call_command

        from ..models import Job
        from ..submission import submit
        from .streamapp import STREAM

        call_command("migrate", verbosity=0)
        worker = _spawn("worker", db, server)
        try:
            wait_for_workers(server, STREAM, 1)
            start, half = tmp / "start", tmp / "half"
            job = submit(STREAM, [str(start), str(half)])
            processes = min(attachers, 4)
            shares = [
                attachers // processes + (n < attachers % processes) for n in range(processes)
            ]
            readies = [tmp / f"ready-{n}" for n in range(processes)]
            procs = [
                _spawn("attach", db, server, job.key, str(share), str(ready))
                for share, ready in zip(shares, readies, strict=True)
            ]
            for ready in readies:
                _wait_for(ready)
            began = time.perf_counter()
            start.touch()
            record = Job.objects.filter(pk=job.pk)
            deadline = time.monotonic() + 120
            while record.get().stream_seq < HALF:  # the task waits at chunk 5,000
                if time.monotonic() > deadline:
                    raise RuntimeError("the first 5,000 chunks were not kept in time")
                time.sleep(0.01)
            join_at_half = _replay_seconds(job.key, None, HALF)
            half.touch()
            results = [_last_json(proc) for proc in procs]
            wall = time.perf_counter() - began
            while record.get().status != "complete":
                time.sleep(0.01)
            after_end = _replay_seconds(job.key, None, CHUNKS)
        finally:
            worker.send_signal(signal.SIGTERM)
        statements = _last_json(worker, 60)["statements"]
        latencies = [x for r in results for x in r["latencies"]]
        return {
            "cores": os.cpu_count() or 1,
            "load": load,
            "attachers": attachers,
            "processes": processes,
            "chunks": CHUNKS,
            "complete": sum(r["complete"] for r in results),
            "wall_s": wall,
            "statements": statements,
            "statements_per_chunk": statements / CHUNKS,
            "p50_ms": _percentile(latencies, 0.5) * 1000,
            "p99_ms": _percentile(latencies, 0.99) * 1000,
            "join_at_half_ms": join_at_half * 1000,
            "after_end_ms": after_end * 1000,
        }


def report(f: dict[str, Any]) -> str:
    t = TARGETS
    rows = [
        (
            "database statements per chunk",
            f"{f['statements_per_chunk']:.4f}",
            f"<= {t['statements']}",
        ),
        ("chunk latency p50 (ms)", f"{f['p50_ms']:.1f}", ""),
        ("chunk latency p99 (ms)", f"{f['p99_ms']:.1f}", f"<= {t['p99_ms']:.0f}"),
        (
            "replay, join at chunk 5,000 (ms)",
            f"{f['join_at_half_ms']:.1f}",
            f"<= {t['replay_ms']:.0f}",
        ),
        (
            "replay, attach after the end (ms)",
            f"{f['after_end_ms']:.1f}",
            f"<= {t['replay_ms']:.0f}",
        ),
    ]
    lines = [
        f"{f['cores']} cores (load average {f['load']:.1f} at the start); one job streams "
        f"{f['chunks']:,} chunks of ~20 bytes to "
        f"{f['attachers']} Python attachers (aattach, {f['processes']} processes) in "
        f"{f['wall_s']:.2f} s; SQLite (WAL)",
        f"attachers that got every chunk in order, none twice: {f['complete']} of {f['attachers']}"
        f" ({f['statements']} statements in the run)",
        f"{'figure':<36}{'measured':>12}  target",
    ]
    lines += [f"{name:<36}{value:>12}  {target}" for name, value, target in rows]
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    role, *rest = argv
    if role == "main":
        figures = run_main(int(rest[0]) if rest else 20)
        print(report(figures))
        print(json.dumps(figures))
    elif role == "worker":
        run_worker(*rest)
    elif role == "attach":
        db, server, key, count, ready = rest
        run_attachers(db, server, key, int(count), ready)
    else:
        raise SystemExit(f"unknown role {role!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
