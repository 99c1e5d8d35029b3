"""``--peers``' tables: every system's rows (a) and (b), and the issue's targets beside them.

Pure functions of the figures (no processes, no Django), so the ratios and the verdicts
are tested without running anything.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .shapes import percentile

SQLITE = "this app, SQLite"
PG_PREPARED = "this app, PG prepared"
PG_DEFAULT = "this app, PG default"
OURS = (SQLITE, PG_PREPARED, PG_DEFAULT)
DRAMATIQ, HUEY, CELERY = "Dramatiq", "Huey", "Celery"
PEERS = (DRAMATIQ, HUEY, CELERY)
#: Whether each system keeps a durable record of each job (submitted, running, outcome).
DURABLE = {SQLITE: True, PG_PREPARED: True, PG_DEFAULT: True}

Results = dict[str, dict[str, Any] | None]


def short(name: str) -> str:
    """A column's name without "this app, "."""
    return name.removeprefix("this app, ")


@dataclass(frozen=True)
class Verdict:
    target: str
    measured: str
    met: bool | None  # None: a figure it needs was not measured

    @property
    def word(self) -> str:
        return {True: "met", False: "NOT MET", None: "not measured"}[self.met]


def p50_ms(figures: dict[str, Any]) -> float:
    return percentile(figures["a"], 0.5) * 1000


def p99_ms(figures: dict[str, Any]) -> float:
    return percentile(figures["a"], 0.99) * 1000


def cpu_ms(figures: dict[str, Any]) -> float:
    cpu = figures["b_cpu"]
    return float(cpu["client_cpu_ms_per_job"] + cpu["worker_cpu_ms_per_job"])


def fastest_peer(results: Results) -> tuple[str, float] | None:
    """The faster of Dramatiq and Huey in row (b), the issue's bar."""
    rates = [(name, r["b"]) for name in (DRAMATIQ, HUEY) if (r := results.get(name))]
    return max(rates, key=lambda pair: pair[1]) if rates else None


def verdicts(results: Results) -> list[Verdict]:
    """The issue's targets, each with what this run measured and whether it is met."""
    out: list[Verdict] = []
    sqlite = results.get(SQLITE)
    bar = fastest_peer(results)
    if sqlite is None or bar is None:
        out.append(Verdict("(b) SQLite >= the faster of Dramatiq and Huey", "-", None))
    else:
        ratio = sqlite["b"] / bar[1]
        out.append(
            Verdict(
                "(b) SQLite >= the faster of Dramatiq and Huey",
                f"{sqlite['b']:,.0f} vs {bar[0]} {bar[1]:,.0f} jobs/s: {ratio:.2f}x",
                ratio >= 1,
            )
        )
    for name in (PG_PREPARED, PG_DEFAULT):
        pg = results.get(name)
        if pg is None or sqlite is None:
            if name in results:
                out.append(Verdict(f"(b) {short(name)} >= 0.67x SQLite", "-", None))
            continue
        ratio = pg["b"] / sqlite["b"]
        out.append(
            Verdict(
                f"(b) {short(name)} >= 0.67x SQLite",
                f"{pg['b']:,.0f} vs {sqlite['b']:,.0f} jobs/s: {ratio:.2f}x",
                ratio >= 0.67,
            )
        )
    huey = results.get(HUEY)
    for name in OURS:
        ours = results.get(name)
        if name not in results:
            continue
        label = short(name)
        if ours is None:
            out.append(Verdict(f"(a) {label}: p50 <= 2 ms, <= Huey's; p99 <= 10 ms", "-", None))
            continue
        out.append(
            Verdict(f"(a) {label} p50 <= 2 ms", f"{p50_ms(ours):.2f} ms", p50_ms(ours) <= 2)
        )
        if huey is None:
            out.append(Verdict(f"(a) {label} p50 <= Huey's", "-", None))
        else:
            out.append(
                Verdict(
                    f"(a) {label} p50 <= Huey's",
                    f"{p50_ms(ours):.2f} vs {p50_ms(huey):.2f} ms: "
                    f"{p50_ms(ours) / p50_ms(huey):.2f}x",
                    p50_ms(ours) <= p50_ms(huey),
                )
            )
        out.append(
            Verdict(f"(a) {label} p99 <= 10 ms", f"{p99_ms(ours):.2f} ms", p99_ms(ours) <= 10)
        )
    if sqlite is None:
        out.append(Verdict("CPU per job, client + worker, SQLite <= 0.5 ms", "-", None))
    else:
        cpu = sqlite["b_cpu"]
        out.append(
            Verdict(
                "CPU per job, client + worker, SQLite <= 0.5 ms",
                f"{cpu['client_cpu_ms_per_job']:.2f} + {cpu['worker_cpu_ms_per_job']:.2f}"
                f" = {cpu_ms(sqlite):.2f} ms",
                cpu_ms(sqlite) <= 0.5,
            )
        )
    return out


def _row(name: str, figures: dict[str, Any] | None, bar: tuple[str, float] | None) -> list[str]:
    if figures is None:
        return [name, "NOT RUN", "", "", "", "", ""]
    cpu = figures["b_cpu"]
    server = cpu.get("server_cpu_ms_per_job")
    version = figures.get("version")
    return [
        f"{name} {version}" if version else name,
        f"{figures['b']:,.0f}",
        f"{figures['b'] / bar[1]:.2f}x" if bar else "-",
        f"{p50_ms(figures):.2f} / {p99_ms(figures):.2f}",
        f"{cpu['client_cpu_ms_per_job']:.2f} + {cpu['worker_cpu_ms_per_job']:.2f}",
        "-" if server is None else f"{server:.2f}",
        "yes" if DURABLE.get(name) else "no",
    ]


HEADER = [
    "system",
    "(b) jobs/s",
    "(b) / fastest",
    "(a) p50 / p99 ms",
    "CPU ms/job cl + wk",
    "server CPU ms/job",
    "durable",
]


def format_grid(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(
            cell.ljust(w) if i == 0 else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        ).rstrip()
        for row in rows
    )


def peers_table(results: Results) -> str:
    """Every system measured, in the order measured, then the targets with their verdicts."""
    bar = fastest_peer(results)
    grid = [HEADER] + [_row(name, figures, bar) for name, figures in results.items()]
    lines = [
        format_grid(grid),
        "",
        "(b) / fastest: against the faster of Dramatiq and Huey in this run. server CPU: "
        "gearmand for this app, redis-server for the peers (the databases' own is not in it).",
        "",
        format_grid(
            [["target", "measured", ""]]
            + [[v.target, v.measured, v.word] for v in verdicts(results)]
        ),
    ]
    return "\n".join(lines)
