"""End to end, per database: the async throughput row and the user-shaped rows.

Runs in a process of its own per database (Django is configured once per process):
``python -m django_gearattach.bench.e2e client|worker DB_URL GEARMAND_ADDRESS ...``.
The client starts the worker processes, measures, and prints one JSON line.
"""

from __future__ import annotations

import asyncio
import contextlib
import cProfile
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from collections import deque
from itertools import accumulate, starmap
from pathlib import Path
from typing import Any

import django
from django.conf import settings

from ..testing import wait_for_workers

QUERIES = {"count": 0}
#: Set by ``--tracing``: "sdk" sets OpenTelemetry's SDK up (an exporter that drops every
#: span) and submits each job inside a request's span; "on" also turns the app's tracing on.
TRACING_ENV = "GEARATTACH_BENCH_TRACING"
#: Set by ``--peers`` and ``--profile``: "ab" measures rows (a) and (b) only.
ROWS_ENV = "GEARATTACH_BENCH_ROWS"
#: The gearmand's pid, whose CPU time per job row (b) then reports.
SERVER_PID_ENV = "GEARATTACH_BENCH_SERVER_PID"
#: Set by ``--profile`` to a directory: client and workers profile row (b) only there.
PHASE_PROFILE_ENV = "GEARATTACH_BENCH_PHASE_PROFILE"


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
    sdk = os.environ.get(TRACING_ENV, "")
    traced = sdk == "on"
    settings.configure(
        INSTALLED_APPS=["django.contrib.contenttypes", "django.contrib.auth", "django_gearattach"],
        DATABASES={"default": database(url)},
        USE_TZ=True,
        GEARATTACH={"SERVERS": [server], "TRACING": traced},
        LOGGING_CONFIG=None,
    )
    if sdk:
        from .tracing import set_up_sdk

        set_up_sdk()
    django.setup()
    from django.db.backends.signals import connection_created

    def count(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        QUERIES["count"] += 1
        return execute(sql, params, many, context)

    def install(sender: Any, connection: Any, **kwargs: Any) -> None:
        if count not in connection.execute_wrappers:
            connection.execute_wrappers.append(count)

    connection_created.connect(install, weak=False)


#: Set by ``--tracing --instructions``: a directory for valgrind's callgrind output. The
#: processes run under callgrind, which counts instructions only inside
#: ``itertools.starmap`` and dumps its counts at each ``accumulate`` step (:func:`counted`).
CALLGRIND_ENV = "GEARATTACH_BENCH_CALLGRIND"


def callgrind(role: str) -> list[str]:
    """The command prefix that runs a bench process under callgrind, if asked for."""
    directory = os.environ.get(CALLGRIND_ENV)
    if not directory:
        return []
    return [
        "valgrind",
        "--tool=callgrind",
        "--toggle-collect=starmap_next",
        "--dump-before=accumulate_next",
        f"--callgrind-out-file={directory}/{role}.%p",
    ]


def counted() -> None:
    """Under callgrind: dump the instructions counted since the last dump."""
    next(accumulate([1]))


def instructions(directory: str, role: str, pid: int) -> int:
    """The count of the latest dump of process ``pid`` (:func:`callgrind`)."""
    dumps = Path(directory).glob(f"{role}.{pid}.*")
    latest = max(dumps, key=lambda path: int(path.suffix[1:]))
    for line in latest.read_text().splitlines():
        if line.startswith("totals:"):
            return int(line.split()[1])
    return 0


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def server_cpu_seconds() -> float | None:
    """CPU seconds the gearmand of ``SERVER_PID_ENV`` has used, if it is known."""
    pid = os.environ.get(SERVER_PID_ENV)
    if not pid:
        return None
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# -- the worker processes ----------------------------------------------------------------
def run_worker(url: str, server: str, report: str) -> None:
    """A real Worker; SIGUSR1 appends a snapshot of its counters to ``report``."""
    configure(url, server)
    from ..gearman.rendezvous import Address
    from ..gearman.worker import Assignment
    from ..worker.loop import Worker
    from . import shapes

    starts: dict[str, float] = {}

    class BenchWorker(Worker):
        def handle(self, job: Assignment, *, marked: bool = False) -> None:
            if job.function == shapes.PROBE:  # row (e): the worker's clock at the start
                starts[job.unique.decode()] = time.time()
            super().handle(job, marked=marked)

    tasks = [shapes.noop, shapes.steps, shapes.gate, shapes.probe]
    worker = BenchWorker(tasks, [Address.parse(server)])

    def snapshot(final: bool = False) -> None:
        counted()  # under callgrind: the instructions since the last snapshot
        line = {
            "jobs": worker.jobs_done,
            "folded": worker.jobs_folded,
            "queries": QUERIES["count"],
            "cpu": cpu_seconds(),
            **({"starts": starts} if final else {}),
        }
        with open(report, "a") as out:
            out.write(json.dumps(line) + "\n")

    signal.signal(signal.SIGTERM, lambda *_: worker.stop())
    signal.signal(signal.SIGUSR1, lambda *_: snapshot())
    phase_dir = os.environ.get(PHASE_PROFILE_ENV)
    if phase_dir:  # --profile: SIGUSR2 starts the profiler, the next one writes it out
        profiler = cProfile.Profile(time.process_time)
        toggled = {"on": False}

        def toggle(*_: object) -> None:
            if toggled["on"]:
                profiler.disable()
                profiler.dump_stats(f"{phase_dir}/worker-{os.getpid()}.prof")
            else:
                profiler.enable()
            toggled["on"] = not toggled["on"]

        signal.signal(signal.SIGUSR2, toggle)
    profile_dir = os.environ.get("GEARATTACH_BENCH_PROFILE")
    if os.environ.get(CALLGRIND_ENV):  # everything the worker does is counted
        deque(starmap(worker.run, [()]), 0)
    elif profile_dir:  # --profile: CPU time spent per function, for docs/benchmarks.rst
        profiler = cProfile.Profile(time.process_time)
        profiler.runcall(worker.run)
        profiler.dump_stats(f"{profile_dir}/worker-{os.getpid()}.prof")
    else:
        worker.run()
    snapshot(final=True)


class Workers:
    """The worker processes of one database, and their counters between two moments."""

    def __init__(self, url: str, server: str, count: int) -> None:
        self.reports = [Path(tempfile.mktemp(prefix="gearattach-bench-")) for _ in range(count)]
        command = [sys.executable, "-m", "django_gearattach.bench.e2e", "worker", url, server]
        command = [*callgrind("worker"), *command]
        # Their output goes to stderr: the client's stdout is what it answers on.
        self.procs = [
            subprocess.Popen([*command, str(report)], stdout=sys.stderr) for report in self.reports
        ]
        self.slow = bool(os.environ.get(CALLGRIND_ENV))  # valgrind: 50 times slower
        wait_for_workers(server, "gearattach.bench.noop", count, 900 if self.slow else 20)

    def _lines(self, report: Path) -> list[dict[str, Any]]:
        if not report.exists():
            return []
        return [json.loads(line) for line in report.read_text().splitlines() if line]

    def snapshot(self) -> dict[str, float]:
        """Sum of every worker's counters now."""
        before = [len(self._lines(r)) for r in self.reports]
        for proc in self.procs:
            proc.send_signal(signal.SIGUSR1)
        deadline = time.monotonic() + (600 if self.slow else 30)
        while any(len(self._lines(r)) <= n for r, n in zip(self.reports, before, strict=True)):
            if time.monotonic() > deadline:
                raise RuntimeError("a bench worker did not answer SIGUSR1")
            time.sleep(0.01)
        lines = [self._lines(r)[-1] for r in self.reports]
        return {k: sum(line[k] for line in lines) for k in ("jobs", "folded", "queries", "cpu")}

    def signal(self, signum: int) -> None:
        for proc in self.procs:
            proc.send_signal(signum)

    def stop(self) -> dict[str, float]:
        """Stop the workers; return the probe start times they recorded (row (e))."""
        for proc in self.procs:
            proc.send_signal(signal.SIGTERM)
        starts: dict[str, float] = {}
        for proc, report in zip(self.procs, self.reports, strict=True):
            proc.wait(600 if self.slow else 30)
            lines = self._lines(report)
            if lines and "starts" in lines[-1]:
                starts.update(lines[-1]["starts"])
            report.unlink(missing_ok=True)
        return starts


# -- the client ---------------------------------------------------------------------------------
async def _drive(jobs: int, window: int) -> float:
    from ..attachment import aattach
    from ..submission import asubmit
    from .shapes import NOOP

    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(jobs):
        queue.put_nowait(i)
    failures = []

    request = _request_span()

    async def one_lane() -> None:
        while not queue.empty():
            queue.get_nowait()
            with request():  # traced: each job is submitted and awaited in a request's span
                job = await asubmit(NOOP)
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


def _request_span() -> Any:
    if not os.environ.get(TRACING_ENV):
        return contextlib.nullcontext
    from .tracing import request_span

    return request_span


class _Phase:
    """Client and worker CPU and statements over one measurement."""

    def __init__(self, workers: Workers) -> None:
        self.workers = workers

    def __enter__(self) -> _Phase:
        self.queries, self.cpu = QUERIES["count"], cpu_seconds()
        self.worker = self.workers.snapshot()
        self.server = server_cpu_seconds()
        return self

    def __exit__(self, *exc: object) -> None:
        self.client_queries = QUERIES["count"] - self.queries
        self.client_cpu = cpu_seconds() - self.cpu
        server = server_cpu_seconds()
        self.server_cpu = None if server is None or self.server is None else server - self.server
        after = self.workers.snapshot()
        self.worker = {k: after[k] - self.worker[k] for k in after}

    def per_job(self, jobs: int) -> dict[str, float]:
        done = max(self.worker["jobs"], 1)
        return {
            "client_queries_per_job": self.client_queries / jobs,
            "worker_queries_per_job": self.worker["queries"] / done,
            "worker_folded_share": self.worker["folded"] / done,
            "client_cpu_ms_per_job": self.client_cpu * 1000 / jobs,
            "worker_cpu_ms_per_job": self.worker["cpu"] * 1000 / done,
            **(
                {"server_cpu_ms_per_job": self.server_cpu * 1000 / jobs}
                if self.server_cpu is not None
                else {}
            ),
        }


def run_client(url: str, server: str, jobs: int, window: int, workers: int) -> dict[str, Any]:
    configure(url, server)
    from django.core.management import call_command

    from ..models import Job
    from . import shapes

    call_command("migrate", verbosity=0)
    pool = Workers(url, server, workers)
    out: dict[str, Any] = {}
    try:
        asyncio.run(_drive(min(300, jobs), window))  # warm-up
        shapes.one_at_a_time(20)
        Job.objects.all().delete()
        if os.environ.get(ROWS_ENV) == "ab":
            return _rows_ab(pool)
        with _Phase(pool) as phase:
            out["rate"] = asyncio.run(_drive(jobs, window))
        out.update(phase.per_job(jobs))
        out["complete"] = Job.objects.filter(status="complete").count()

        out["a"] = shapes.one_at_a_time(200)
        with _Phase(pool) as phase:
            out["b"], keys = shapes.submit_then_attach(shapes.NOOP, 2000)
        out["b_cpu"] = phase.per_job(2000)
        out["c"], _ = shapes.submit_then_attach(shapes.STEPS, 500)
        out["d"] = shapes.attach_finished(keys[:500])
        with tempfile.TemporaryDirectory() as tmp:
            heard = shapes.start_latency(200, workers, Path(tmp) / "gate")
    finally:
        starts = pool.stop()
    missing = set(heard) - set(starts)
    if missing:
        raise RuntimeError(f"{len(missing)} probe jobs have no start time")
    out["e"] = [heard[key] - starts[key] for key in heard]
    return out


def _rows_ab(pool: Workers) -> dict[str, Any]:
    """Rows (a) and (b) only (``--peers``); with ``PHASE_PROFILE_ENV``, row (b) profiled."""
    from . import shapes

    out: dict[str, Any] = {"a": shapes.one_at_a_time(200)}
    profile_dir = os.environ.get(PHASE_PROFILE_ENV)
    profiler = cProfile.Profile(time.process_time) if profile_dir else None
    with _Phase(pool) as phase:
        if profiler is not None:
            pool.signal(signal.SIGUSR2)
            profiler.enable()
        out["b"], _ = shapes.submit_then_attach(shapes.NOOP, 2000)
        if profiler is not None:
            profiler.disable()
            pool.signal(signal.SIGUSR2)
    out["b_cpu"] = phase.per_job(2000)
    out["b_cpu"]["worker_jobs"] = phase.worker["jobs"]
    if profiler is not None:
        profiler.dump_stats(f"{profile_dir}/client.prof")
    return out


def main(argv: list[str]) -> None:
    role, url, server, *rest = argv
    if role == "worker":
        run_worker(url, server, rest[0])
    else:
        jobs, window, workers = (int(x) for x in rest)
        print(json.dumps(run_client(url, server, jobs, window, workers)))


if __name__ == "__main__":
    main(sys.argv[1:])
