"""``--profile``: where a job's time goes, per phase, before any optimization.

Row (b) (2,000 no-op jobs: a ``submit()`` loop, then ``attach()`` to each) on SQLite, run
twice in one gearmand: once plain, for the CPU each process really spends per job, then
with the client and every worker under cProfile (CPU clock) for that row only. Each
function's own time is split between phases the way gprof does: a phase's entry function
owns its calls; any other function's time goes to its callers' phases in proportion to
the time each caller spent in it. gearmand's CPU comes from /proc; SQLite runs inside the
client and worker processes, so the database's share is the time in ``sqlite3``'s own
functions, shown per phase.
"""

from __future__ import annotations

import pstats
import re
import tempfile
from pathlib import Path
from typing import Any

from ..testing import Gearmand
from .columns import e2e
from .e2e import PHASE_PROFILE_ENV, ROWS_ENV, SERVER_PID_ENV

Func = tuple[str, int, str]
#: (phase, entry functions as (path suffix, name)); the first match wins.
CLIENT_PHASES: list[tuple[str, list[tuple[str, str]]]] = [
    ("Job model instances (Model.__init__)", [("django/db/models/base.py", "__init__")]),
    ("submit: record INSERT", [("records.py", "insert")]),
    ("submit: SUBMIT_JOB_BG, JOB_CREATED", [("submission.py", "_send")]),
    ("submit: the rest (key, payload, record)", [("submission.py", "submit")]),
    ("attach: wait, packets, outcome read", [("attachment.py", "attach")]),
]
WORKER_PHASES: list[tuple[str, list[tuple[str, str]]]] = [
    (
        "grab: GRAB_JOB, JOB_ASSIGN, sleep",
        [("gearman/worker.py", "grab"), ("gearman/worker.py", "grab_ahead")],
    ),
    ("claim: running mark", [("worker/starting.py", "start")]),
    ("start signal (WORK_DATA)", [("worker/claim.py", "send")]),
    ("body (the task)", [("django_gearattach/tasks.py", "run")]),
    ("outcome write", [("worker/loop.py", "_conclude")]),
    ("WORK_COMPLETE", [("worker/loop.py", "_send_final")]),
    ("log line per job", [("logging/__init__.py", "info")]),
    ("connection checks per job", [("django_gearattach/records.py", "drop_broken_connections")]),
    (
        "watchdog, lease keeper",
        [
            ("worker/watchdog.py", "watching"),
            ("worker/fencing.py", "hold"),
            ("worker/fencing.py", "release"),
        ],
    ),
]
OTHER = "the rest (loop, logging, Django)"


def _entry(func: Func, phases: list[tuple[str, list[tuple[str, str]]]]) -> str | None:
    path, _, name = func
    for phase, entries in phases:
        if any(path.endswith(suffix) and name == entry for suffix, entry in entries):
            return phase
    return None


def is_database(func: Func) -> bool:
    """SQLite's functions: the ``sqlite3`` module's C methods (cProfile names them
    ``<method 'execute' of 'sqlite3.Cursor' objects>``) and Django's cursor over them."""
    return "sqlite3" in func[2] or "SQLiteCursorWrapper" in func[2]


def split_by_phase(
    stats: dict[Func, Any], phases: list[tuple[str, list[tuple[str, str]]]]
) -> dict[str, dict[Func, float]]:
    """Each function's own time per phase: {phase: {function: seconds}}."""
    shares: dict[Func, dict[str, float]] = {}

    def share(func: Func, seen: frozenset[Func]) -> dict[str, float]:
        if func in shares:
            return shares[func]
        entry = _entry(func, phases)
        if entry is not None:
            result = {entry: 1.0}
        else:
            callers = stats[func][4] if func in stats else {}
            weights = {c: edge[3] for c, edge in callers.items() if c not in seen}
            total = sum(weights.values())
            result = {}
            if total <= 0:
                result = {OTHER: 1.0}
            else:
                for caller, weight in weights.items():
                    for phase, part in share(caller, seen | {func}).items():
                        result[phase] = result.get(phase, 0.0) + part * weight / total
        shares[func] = result  # a recursive cycle is cut where it was first entered
        return result

    out: dict[str, dict[Func, float]] = {}
    for func, (_, _, own, _, _) in stats.items():
        for phase, part in share(func, frozenset()).items():
            out.setdefault(phase, {})[func] = out.get(phase, {}).get(func, 0.0) + own * part
    return out


def _name(func: Func) -> str:
    path, _, name = func
    if path == "~":
        name = re.sub(r" at 0x[0-9a-f]+", "", name)
        return re.sub(r"^<(built-in method|method|function) (.*)>$", r"\2", name)
    parts = Path(path).parts
    short = "/".join(parts[-2:])
    return f"{short}:{name}"


def phase_rows(
    by_phase: dict[str, dict[Func, float]],
    phases: list[tuple[str, list[tuple[str, str]]]],
    jobs: int,
    scale: float,
) -> list[list[str]]:
    """Per phase: µs per job under cProfile, scaled to the unprofiled CPU, sqlite3's part,
    and its three functions with the most own time."""
    rows = []
    for phase in [p for p, _ in phases] + [OTHER]:
        funcs = by_phase.get(phase, {})
        total = sum(funcs.values())
        database = sum(t for f, t in funcs.items() if is_database(f))
        named: dict[str, float] = {}
        for func, seconds in funcs.items():  # one line per function across processes
            named[_name(func)] = named.get(_name(func), 0.0) + seconds
        top = sorted(named.items(), key=lambda item: -item[1])[:3]
        rows.append(
            [
                phase,
                f"{total * 1e6 / jobs:.0f}",
                f"{database * 1e6 / jobs:.0f}",
                f"{total * scale * 1e6 / jobs:.0f}",
                ", ".join(f"{f} {t * 1e6 / jobs:.0f}" for f, t in top if t > 0),
            ]
        )
    return rows


def _load(paths: list[Path]) -> tuple[dict[Func, Any], float]:
    stats = pstats.Stats(*(str(p) for p in paths))
    return stats.stats, stats.total_tt  # type: ignore[attr-defined]


def profile_table(
    client: tuple[dict[Func, Any], float],
    worker: tuple[dict[Func, Any], float],
    plain: dict[str, Any],
    profiled: dict[str, Any],
    workers: int = 2,
) -> str:
    from .peertable import format_grid

    jobs = 2000
    worker_jobs = int(profiled["b_cpu"].get("worker_jobs") or jobs)
    plain_cpu = plain["b_cpu"]
    header = [
        "phase",
        "µs/job profiled",
        "of it in SQLite",
        "µs/job scaled",
        "top own time (µs/job profiled)",
    ]
    lines = []
    for title, (stats, total), phases, count, key in (
        ("client (the submit loop and the attaches)", client, CLIENT_PHASES, jobs, "client"),
        ("worker (both processes)", worker, WORKER_PHASES, worker_jobs, "worker"),
    ):
        real = plain_cpu[f"{key}_cpu_ms_per_job"] * 1000
        measured = total * 1e6 / count
        scale = real / measured if measured else 1.0
        rows = phase_rows(split_by_phase(stats, phases), phases, count, scale)
        rows.append(["total", f"{measured:.0f}", "", f"{real:.0f}", ""])
        lines += [f"{title}: {count} jobs", format_grid([header, *rows]), ""]
    server = plain_cpu.get("server_cpu_ms_per_job")
    lines.append(
        "gearmand: "
        + ("-" if server is None else f"{server * 1000:.0f} µs CPU per job (from /proc)")
        + f"; row (b) {plain['b']:,.0f} jobs/s plain, {profiled['b']:,.0f} profiled; "
        f"wall time per job {1e6 / plain['b']:.0f} µs on {workers} worker processes"
    )
    lines.append(
        "scaled: the profiled figures times (CPU per job without the profiler / with it), "
        "per process; cProfile inflates Python calls more than C, so read the scaled "
        "column as an estimate and the profiled one's shares as the measurement. Totals "
        "differ from the profiled sum of phases by cProfile's own bookkeeping."
    )
    return "\n".join(lines)


def main(workers: int, window: int) -> int:
    from .peers.run import machine_line

    print(machine_line())
    print(f"row (b): 2,000 no-op jobs on SQLite, {workers} worker processes\n", flush=True)
    with Gearmand() as gearmand, tempfile.TemporaryDirectory() as tmp:
        env = {ROWS_ENV: "ab", SERVER_PID_ENV: str(gearmand.pid)}
        plain = e2e(
            f"sqlite:///{tmp}/plain.sqlite3", gearmand.address, 2000, window, workers, env=env
        )
        directory = Path(tmp) / "profiles"
        directory.mkdir()
        profiled = e2e(
            f"sqlite:///{tmp}/profiled.sqlite3",
            gearmand.address,
            2000,
            window,
            workers,
            env={**env, PHASE_PROFILE_ENV: str(directory)},
        )
        client = _load([directory / "client.prof"])
        worker = _load(sorted(directory.glob("worker-*.prof")))
    print(profile_table(client, worker, plain, profiled, workers))
    return 0
