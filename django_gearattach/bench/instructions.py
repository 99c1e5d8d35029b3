"""``--tracing --instructions``: instructions per job with the app's tracing off and on.

CPU time on a shared machine moves with the other work on it; the instructions a job
executes do not. Valgrind's callgrind counts them in one process
(``python -m django_gearattach.bench.instructions measure``), only inside
``itertools.starmap`` (``--toggle-collect=starmap_next``), which each case runs its
jobs through, and dumps the count between cases (``--dump-before=accumulate_next``).
Cases, each with OpenTelemetry's SDK (spans dropped) and a request's span around it:

* ``job``: a whole job in immediate mode, in one process on SQLite: ``submit()`` (the
  record, the worker's own steps, the run's span) then ``attach()`` to its outcome;
* ``submit``, ``attach``, ``run``: the paths tracing adds to alone: building a submit
  (its carrier, its payload), ``aattach()`` over a job's two events, and the worker's
  hook around a task that does nothing (no database, no gearmand).
"""

from __future__ import annotations

import gc
import os
import shutil
import subprocess
import sys
import tempfile
from collections import deque
from collections.abc import AsyncIterator, Callable
from itertools import accumulate, starmap
from pathlib import Path
from typing import Any

CASES = {"job": 100, "submit": 500, "attach": 500, "run": 500}
WARM_UP = 30


def _between_cases() -> None:
    list(accumulate([1]))  # callgrind dumps its counts here (--dump-before)


def _measure(case: Callable[[int], Any], jobs: int) -> None:
    for number in range(WARM_UP):
        case(number)
    # The objects of set-up and earlier cases out of the collector's way: a full
    # collection among the counted jobs would count them, and move between runs.
    gc.collect()
    gc.freeze()
    _between_cases()
    deque(starmap(case, ((number,) for number in range(jobs))), 0)
    _between_cases()


class _Event:
    def __init__(self, event: str, terminal: bool) -> None:
        self.event, self.terminal = event, terminal


async def _two_events(job: Any, timeout: float | None = None) -> AsyncIterator[Any]:
    yield _Event("started", False)
    yield _Event("complete", True)


def _drain(events: AsyncIterator[Any]) -> None:
    """Run an async iterator that never waits, without an event loop."""
    while True:
        try:
            events.__anext__().send(None)  # type: ignore[attr-defined]
        except StopIteration:
            continue
        except StopAsyncIteration:
            return


def measure(database: str) -> None:
    """Run every case off then on (in this process: run it under callgrind)."""
    from .e2e import configure

    os.environ["GEARATTACH_BENCH_TRACING"] = "sdk"
    configure(f"sqlite:///{database}", "127.0.0.1:4730")
    from django.core.management import call_command
    from django.test.utils import override_settings

    from .. import attach, submit
    from ..models import Job
    from ..submission import _Request
    from ..tasks import JobContext, policy_of
    from ..tracing.attaching import atraced
    from ..tracing.run import RunTracer
    from .shapes import NOOP
    from .tracing import request_span

    call_command("migrate", verbosity=0)

    def job(number: int) -> None:
        with request_span():
            done = submit(NOOP)
            for _ in attach(done, timeout=10):
                pass

    def request(number: int) -> None:
        with request_span():
            _Request(NOOP, (), None, None, None, None, "", policy=policy_of(NOOP, None))

    with request_span():
        payload = _Request(NOOP, (), None, None, None, None, "").arguments
    finished = Job(function=NOOP, key="k", arguments=payload)  # as aattach(job) has it

    def attaching(number: int) -> None:
        with request_span():
            if traced:
                _drain(atraced(_two_events, (finished,), {"timeout": 10}))
            else:
                _drain(_two_events(finished, timeout=10))

    class Claim:
        function, key, execution = NOOP, "k", "e"

    def call(claim: Any, args: Any, kwargs: Any, reporter: Any, context: Any) -> str:
        for callback in context.outcome_callbacks:
            callback("complete", None)
        return "complete"

    def run(number: int) -> None:
        context = JobContext(NOOP, "k", None, None)  # type: ignore[arg-type]
        if traced:
            RunTracer().run(call, Claim(), [], {}, None, context, payload)  # type: ignore[arg-type]
        else:
            call(Claim(), [], {}, None, context)

    cases: dict[str, Callable[[int], Any]] = {
        "job": job,
        "submit": request,
        "attach": attaching,
        "run": run,
    }
    server = {"SERVERS": ["127.0.0.1:4730"], "IMMEDIATE": True}
    for name, case in cases.items():
        for traced in (False, True):
            with override_settings(GEARATTACH={**server, "TRACING": traced}):
                _measure(case, CASES[name])


def _totals(out: Path) -> list[int]:
    """The instruction counts of the dumps that collected any, in order."""
    counts = []
    for dump in sorted(out.parent.glob(f"{out.name}.*"), key=lambda p: int(p.suffix[1:])):
        for line in dump.read_text().splitlines():
            if line.startswith("totals:"):
                count = int(line.split()[1])
                if count:
                    counts.append(count)
    return counts


def run() -> dict[str, tuple[float, float]]:
    """Measure under callgrind; ``{case: (off, on)}`` instructions per job."""
    valgrind = shutil.which("valgrind") or "valgrind"
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "callgrind.out"
        command = [
            valgrind,
            "--tool=callgrind",
            "--toggle-collect=starmap_next",
            "--dump-before=accumulate_next",
            f"--callgrind-out-file={out}",
            sys.executable,
            "-m",
            "django_gearattach.bench.instructions",
            "measure",
            str(Path(tmp) / "bench.sqlite3"),
        ]
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        counts = _totals(out)
    if len(counts) != 2 * len(CASES):
        raise RuntimeError(f"callgrind gave {len(counts)} counts, not {2 * len(CASES)}")
    figures = {}
    for number, (name, jobs) in enumerate(CASES.items()):
        figures[name] = (counts[2 * number] / jobs, counts[2 * number + 1] / jobs)
    return figures


def report(figures: dict[str, tuple[float, float]]) -> str:
    lines = [f"{'instructions per job':<24}{'off':>12}{'on':>12}{'on - off':>12}{'on/off':>9}"]
    labels = {
        "job": "a job (immediate mode)",
        "submit": "  submit path",
        "attach": "  attach path",
        "run": "  worker's run hook",
    }
    for name, (off, on) in figures.items():
        ratio = f"{on / off:>9.2f}" if name == "job" else f"{'':>9}"
        lines.append(f"{labels[name]:<24}{off:>12,.0f}{on:>12,.0f}{on - off:>12,.0f}{ratio}")
    return "\n".join(lines)


if __name__ == "__main__":
    measure(sys.argv[2])
