"""``--tracing``: the async row with the app's tracing off and on, interleaved in rounds.

Both sides have OpenTelemetry's SDK (a batch processor and an exporter that drops every
span: what tracing costs, not an exporter's I/O) and a request's span around each
submit, as a traced site has: what differs is the app's own spans and the context each
job carries. Each side is one long-lived client process (``python -m
django_gearattach.bench.tracing serve ...``) with its own gearmand, database and worker
processes; the parent asks them in turn, round after round (off then on, on then off),
to run the same number of jobs, so that the load of the machine falls on both alike,
and reports the medians over the rounds and their ratios.
"""

from __future__ import annotations

import asyncio
import cProfile
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from contextlib import AbstractContextManager
from itertools import starmap
from typing import IO, Any

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from .e2e import callgrind


class DropExporter(SpanExporter):
    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


def set_up_sdk() -> None:
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(DropExporter()))
    trace.set_tracer_provider(provider)


_tracer: list[trace.Tracer] = []


def request_span() -> AbstractContextManager[Any]:
    """What a traced web request around a submit would be (the Django instrumentation's,
    whose tracer is made once)."""
    if not _tracer:
        _tracer.append(trace.get_tracer("bench"))
    return _tracer[0].start_as_current_span("request")


# -- one side: a client process that runs rounds on demand -------------------------------
def serve(url: str, server: str, workers: int, window: int) -> None:
    """Set up, start the workers, warm up; then run ``jobs`` per line read on stdin and
    answer each with a JSON line of figures per job."""
    from .e2e import CALLGRIND_ENV, Workers, _drive, _Phase, configure, counted, instructions

    configure(url, server)
    from django.core.management import call_command

    from ..models import Job

    call_command("migrate", verbosity=0)
    pool = Workers(url, server, workers)
    # GEARATTACH_BENCH_PROFILE=DIR: the CPU time of the measured rounds per function, for
    # docs/benchmarks.rst (the workers profile themselves: e2e.run_worker).
    profile_dir = os.environ.get("GEARATTACH_BENCH_PROFILE")
    profiler = cProfile.Profile(time.process_time) if profile_dir else None
    counting = os.environ.get(CALLGRIND_ENV, "")
    try:
        asyncio.run(_drive(50 if counting else 300, window))  # warm-up
        print(json.dumps({"ready": True}), flush=True)
        for line in sys.stdin:
            jobs = int(line)
            Job.objects.all().delete()
            with _Phase(pool) as phase:
                if profiler is not None:
                    rate = profiler.runcall(asyncio.run, _drive(jobs, window))
                elif counting:  # callgrind counts inside starmap only
                    (rate,) = starmap(asyncio.run, [(_drive(jobs, window),)])
                    counted()
                else:
                    rate = asyncio.run(_drive(jobs, window))
            figures = {"rate": rate, **phase.per_job(jobs)}
            if counting:
                client = instructions(counting, "client", os.getpid())
                worker = sum(instructions(counting, "worker", p.pid) for p in pool.procs)
                figures["client_instructions_per_job"] = client / jobs
                figures["worker_instructions_per_job"] = worker / max(phase.worker["jobs"], 1)
            print(json.dumps(figures), flush=True)
    finally:
        pool.stop()
        if profiler is not None:
            profiler.dump_stats(f"{profile_dir}/client-{os.getpid()}.prof")


class Side:
    """The parent's handle on one serving client process."""

    def __init__(self, mode: str, url: str, server: str, workers: int, window: int) -> None:
        command = [*callgrind("client"), sys.executable, "-m", "django_gearattach.bench.tracing"]
        env = {**os.environ, "GEARATTACH_BENCH_TRACING": mode}
        self.proc = subprocess.Popen(
            [*command, "serve", url, server, str(workers), str(window)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        self.rounds: list[dict[str, float]] = []
        self._read()  # ready

    def _read(self) -> dict[str, Any]:
        out: IO[str] | None = self.proc.stdout
        assert out is not None
        line = out.readline()
        if not line:
            raise RuntimeError(f"a bench client ended: {self.proc.wait()}")
        return json.loads(line)  # type: ignore[no-any-return]

    def run(self, jobs: int) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"{jobs}\n")
        self.proc.stdin.flush()
        self.rounds.append(self._read())

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self.proc.wait(900)

    def median(self, key: str) -> float:
        return statistics.median(r[key] for r in self.rounds)


def compare(off: Side, on: Side, rounds: int, jobs: int) -> None:
    """``rounds`` rounds, each side once per round; who goes first alternates."""
    for number in range(rounds):
        for side in (off, on) if number % 2 == 0 else (on, off):
            side.run(jobs)


ROWS = [
    ("async jobs/s", "rate", "{:,.0f}", 1),
    ("client CPU ms per job", "client_cpu_ms_per_job", "{:.3f}", 1),
    ("worker CPU ms per job", "worker_cpu_ms_per_job", "{:.3f}", 1),
    ("worker queries per job", "worker_queries_per_job", "{:.2f}", 1),
]
#: ``--instructions``: the rows that count (CPU time under valgrind says nothing).
COUNTED = [
    ("client kinstr per job", "client_instructions_per_job", "{:,.0f}", 1000),
    ("worker kinstr per job", "worker_instructions_per_job", "{:,.0f}", 1000),
    ("worker queries per job", "worker_queries_per_job", "{:.2f}", 1),
]


def _ratios(off: Side, on: Side, key: str) -> list[float]:
    return [b[key] / a[key] for a, b in zip(off.rounds, on.rounds, strict=True) if a[key]]


def report(columns: list[tuple[str, Side | None, Side | None]], counted: bool = False) -> str:
    """One table: per database, the medians off and on, their ratio, and the spread of
    the per-round ratios (lowest-highest); instructions instead of CPU when ``counted``."""
    width = 44
    lines = []
    header = f"{'':<24}" + "".join(f"{name:>{width}}" for name, _, _ in columns)
    sub = f"{'':<24}" + "".join(f"{'off':>9}{'on':>9}{'on/off':>9}{'rounds':>17}" for _ in columns)
    lines += [header, sub]
    for label, key, fmt, scale in COUNTED if counted else ROWS:
        cells = []
        for _, off, on in columns:
            if off is None or on is None:
                cells.append(f"{'n/a':>{width}}")
                continue
            a, b = off.median(key) / scale, on.median(key) / scale
            ratio = b / a if a else float("nan")
            each = _ratios(off, on, key)
            spread = f"{min(each):.2f}-{max(each):.2f}" if each else "n/a"
            cells.append(f"{fmt.format(a):>9}{fmt.format(b):>9}{ratio:>9.2f}{spread:>17}")
        lines.append(f"{label:<24}" + "".join(cells))
    return "\n".join(lines)


if __name__ == "__main__":
    _role, _url, _server, _workers, _window = sys.argv[1:6]
    serve(_url, _server, int(_workers), int(_window))
