"""The bench's table: every row per database, with targets and ratios measured in one run."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .shapes import percentile

Column = tuple[str, dict[str, Any] | None]


def _ms(values: list[float]) -> str:
    return f"{percentile(values, 0.5) * 1000:.2f} / {percentile(values, 0.99) * 1000:.2f}"


def _cpu(figures: dict[str, float]) -> str:
    client, worker = figures["client_cpu_ms_per_job"], figures["worker_cpu_ms_per_job"]
    return f"{client:.2f} + {worker:.2f} = {client + worker:.2f}"


def _statements(figures: dict[str, float]) -> str:
    return f"{figures['client_queries_per_job']:.2f} + {figures['worker_queries_per_job']:.2f}"


# (label, cell, value compared between databases, lower is better, target)
ROWS: list[
    tuple[str, Callable[[dict[str, Any]], str], Callable[[dict[str, Any]], float], bool, str]
] = [
    (
        "(a) submit() then attach(), one at a time: p50 / p99 ms",
        lambda r: _ms(r["a"]),
        lambda r: percentile(r["a"], 0.5),
        True,
        "p50 <= 3 ms and <= 3x (f)",
    ),
    (
        "(b) 2,000 no-op: submit() loop, then attach() each: jobs/s",
        lambda r: f"{r['b']:.0f}",
        lambda r: r["b"],
        False,
        ">= 600",
    ),
    (
        "(c) 500 five-step progress jobs, same shape: jobs/s",
        lambda r: f"{r['c']:.0f}",
        lambda r: r["c"],
        False,
        ">= 300",
    ),
    (
        "(d) attach() to a finished job: p50 / p99 ms",
        lambda r: _ms(r["d"]),
        lambda r: percentile(r["d"], 0.5),
        True,
        "p50 <= 1 ms",
    ),
    (
        "(e) start latency, worker start -> first event: p50 / p99 ms",
        lambda r: _ms(r["e"]),
        lambda r: percentile(r["e"], 0.99),
        True,
        "p99 <= 10 ms",
    ),
    (
        "async: asubmit + aattach, 128 in flight: jobs/s",
        lambda r: f"{r['rate']:.0f}",
        lambda r: r["rate"],
        False,
        "",
    ),
    ("  CPU ms per job, client + worker", lambda r: _cpu(r), lambda r: 0.0, True, ""),
    ("  statements per job, client + worker", lambda r: _statements(r), lambda r: 0.0, True, ""),
    ("(b) CPU ms per job, client + worker", lambda r: _cpu(r["b_cpu"]), lambda r: 0.0, True, ""),
    ("(b) statements per job", lambda r: _statements(r["b_cpu"]), lambda r: 0.0, True, ""),
]


def report_table(floor: float, trips: list[float], columns: list[Column]) -> str:
    width = 62
    lines = [
        "raw floors on our codec (no Django, no database):",
        f"  pipelined, many jobs in flight: {floor:,.0f} jobs/s",
        f"  (f) sequential round trip, one job at a time: p50 / p99 {_ms(trips)} ms",
        "",
        f"{'row':{width}} " + " ".join(f"{name:>22}" for name, _ in columns) + "   target",
    ]
    base = columns[0][1]
    for label, cell, value, lower_better, target in ROWS:
        cells = []
        for _, result in columns:
            if result is None:
                cells.append(f"{'NOT RUN':>22}")
                continue
            text = cell(result)
            compared = value(result)
            if result is not base and base is not None and compared and value(base):
                ratio = compared / value(base) if lower_better else value(base) / compared
                text += f" ({ratio:.2f}x)"
            cells.append(f"{text:>22}")
        lines.append(f"{label:{width}} " + " ".join(cells) + f"   {target}")
    floor_p50 = percentile(trips, 0.5)

    def ratio_row(label: str, cell: Callable[[dict[str, Any]], str], target: str) -> str:
        cells = " ".join(f"{'-' if r is None else cell(r):>22}" for _, r in columns)
        return f"{label:{width}} {cells}   {target}"

    lines.append(
        ratio_row(
            "(a) p50 / (f) p50", lambda r: f"{percentile(r['a'], 0.5) / floor_p50:.1f}x", "<= 3x"
        )
    )
    lines.append(
        ratio_row("async rate / pipelined floor", lambda r: f"{r['rate'] / floor:.1%}", "")
    )
    lines += [
        "",
        "(PostgreSQL columns: in parentheses, how many times worse than SQLite; target <= 1.5x.)",
    ]
    return "\n".join(lines)
