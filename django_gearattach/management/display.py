"""What the management commands print for a person at a terminal (through rich).

The commands print JSON lines when their output is not a terminal, or with
``--json``; these helpers are for the terminal: a progress bar that follows a job,
the outcome as a block, aligned tables, gearworker's start-up summary.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import IO, Any

from rich.console import Console, Group
from rich.panel import Panel
from rich.progress import (
    BarColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table
from rich.text import Text

from ..attachment import JobEvent
from ..health import ServerHealth
from ..models import Job, Status

STATUS_STYLES: dict[str, str] = {
    Status.QUEUED: "bright_black",
    Status.RUNNING: "blue",
    Status.COMPLETE: "green",
    Status.FAILED: "red",
    Status.LOST: "yellow",
    Status.CANCELLED: "bright_black",
}
#: The keys of a dict WORK_DATA payload that name the current step, in order.
STEP_KEYS = ("step", "stage", "message", "status")
MAX_STEP_TEXT = 60


def console_for(stream: IO[str], *, no_color: bool = False) -> Console:
    """A rich console writing to ``stream`` (the command's own stdout)."""
    return Console(file=stream, no_color=no_color, highlight=False, soft_wrap=False)


def step_text(data: Any) -> str | None:
    """The text of a WORK_DATA payload to show beside the bar, if it has any."""
    if isinstance(data, str):
        text = data
    elif isinstance(data, dict):
        found = next((data[k] for k in STEP_KEYS if isinstance(data.get(k), str)), None)
        text = found if found is not None else json.dumps(data, separators=(",", ":"))
    else:
        text = json.dumps(data, separators=(",", ":"), default=str)
    text = " ".join(text.split())
    return text if len(text) <= MAX_STEP_TEXT else text[: MAX_STEP_TEXT - 1] + "…"


def _pretty_json(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, default=str)


class AttachDisplay:
    """A progress bar with the step text and the elapsed time, then the outcome block."""

    def __init__(self, console: Console, function: str, key: str) -> None:
        self.console = console
        self.function = function
        self.key = key
        self.started = time.monotonic()
        self.progress = Progress(
            SpinnerColumn(finished_text="•"),
            TextColumn("[bold]{task.fields[state]}"),
            BarColumn(bar_width=None),
            TaskProgressColumn(),
            TextColumn("{task.fields[step]}"),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        )
        self.task: TaskID | None = None
        self.numbers: tuple[int, int] | None = None

    @contextmanager
    def running(self, state: str) -> Iterator[AttachDisplay]:
        self.console.print(
            Text.assemble(
                ("Attached to ", "dim"), (self.function, "bold"), " ", (f"[{self.key}]", "cyan")
            )
        )
        with self.progress:
            self.task = self.progress.add_task("", total=None, state=state, step="")
            yield self

    def show(self, event: JobEvent) -> None:
        """Reflect one event in the bar (or print it above the bar: warnings)."""
        assert self.task is not None
        if event.event == "status":
            numerator, denominator = event.numerator or 0, event.denominator or 0
            self.numbers = (numerator, denominator)
            fields: dict[str, Any] = {"state": "running"}
            if denominator > 0:
                fields.update(total=denominator, completed=min(numerator, denominator))
                if not self.progress.tasks[0].fields.get("from_data"):
                    fields["step"] = f"step {numerator} of {denominator}"
            self.progress.update(self.task, **fields)
        elif event.event == "data":
            text = step_text(event.data)
            if text:
                self.progress.update(self.task, state="running", step=text, from_data=True)
        elif event.event == "warning":
            self.progress.console.print(Text(f"warning: {event.message}", style="yellow"))
        elif event.event == "started":
            self.progress.update(self.task, state="running")
        elif event.event == "unserved":  # the job waits for a worker that is not there
            self.progress.console.print(Text(f"waiting: {event.message}", style="yellow"))
            self.progress.update(self.task, state="no worker")
        elif event.event == "served":
            self.progress.update(self.task, state="queued")
        else:
            task = self.progress.tasks[0]
            if event.event == "complete":  # a full bar, even without a status report
                total = task.total or 1
                self.progress.update(self.task, total=total, completed=total)
            self.progress.update(self.task, state=event.event)
            self.progress.stop_task(self.task)

    def outcome(self, event: JobEvent) -> None:
        """The outcome as a block below the bar."""
        elapsed = f"{time.monotonic() - self.started:.1f} s"
        if event.event == "complete":
            style, body = "green", Text(_pretty_json(event.result))
        else:
            style, body = "red", Text(event.error or "the job failed", style="red")
        title = Text.assemble((event.event, f"bold {style}"), f" {self.function} [{self.key}]")
        panel = Panel(body, title=title, subtitle=elapsed, border_style=style, expand=False)
        self.console.print(panel)


def _when(value: Any) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S %Z").strip() if value is not None else "—"


def _seconds(start: Any, end: Any) -> str:
    if start is None or end is None:
        return "—"
    return f"{(end - start).total_seconds():.2f} s"


def job_table(job: Job) -> Table:
    """The record as a two-column table."""
    table = Table(show_header=False, box=None, padding=(0, 2, 0, 0))
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    progress = "—"
    if job.progress_denominator > 0:
        progress = f"{job.progress_numerator} of {job.progress_denominator} ({job.progress:.0%})"
    rows: list[tuple[str, Any]] = [
        ("function", job.function),
        ("key", job.key),
        ("status", Text(job.status, style=STATUS_STYLES.get(job.status, ""))),
        ("progress", progress),
        ("server", job.server or "—"),
        ("handle", job.handle or "—"),
        ("attempts", str(job.attempts)),
        ("worker", f"{job.worker_host} (pid {job.worker_pid})" if job.worker_host else "—"),
        ("created", _when(job.created_at)),
        ("started", _when(job.started_at)),
        ("finished", _when(job.finished_at)),
        ("waited", _seconds(job.created_at, job.started_at)),
        ("ran", _seconds(job.started_at, job.finished_at)),
    ]
    if job.data is not None:
        rows.append(("last data", _pretty_json(job.data)))
    if job.status == Status.COMPLETE:
        rows.append(("result", _pretty_json(job.result)))
    if job.error:
        rows.append(("error", Text(job.error, style="red")))
    for name, value in rows:
        table.add_row(name, value)
    return table


def servers_table(servers: Sequence[ServerHealth]) -> Table:
    """One row per (server, function); a server without functions or unreachable, one row."""
    table = Table(title="gearmand servers", title_justify="left")
    table.add_column("server", style="bold")
    table.add_column("state")
    table.add_column("version")
    table.add_column("function")
    table.add_column("queued", justify="right")
    table.add_column("running", justify="right")
    table.add_column("workers", justify="right")
    for server in servers:
        if not server.reachable:
            table.add_row(
                server.address,
                Text("unreachable", style="red"),
                "",
                Text(server.error, style="red"),
                "",
                "",
                "",
            )
            continue
        state = Text("reachable", style="green")
        if not server.functions:
            table.add_row(
                server.address,
                state,
                server.version,
                Text("no functions", style="dim"),
                "",
                "",
                "",
            )
        for i, f in enumerate(server.functions):
            workers = Text(str(f.workers), style="bold red" if f.workers == 0 and f.total else "")
            table.add_row(
                server.address if i == 0 else "",
                state if i == 0 else "",
                server.version if i == 0 else "",
                f.function,
                str(f.waiting),
                str(f.running),
                workers,
            )
    return table


def worker_summary(
    *,
    version: str,
    pid: int,
    servers: Iterable[ServerHealth],
    functions: Iterable[str],
    processes: int,
    database: str,
    reload: bool,
    metrics: str | None = None,
) -> Panel:
    """gearworker's start-up summary."""
    table = Table(show_header=False, box=None, padding=(0, 2, 0, 0))
    table.add_column(style="bold")
    table.add_column()
    lines = []
    for server in servers:
        if server.reachable:
            lines.append(Text.assemble(server.address, (f"  gearmand {server.version}", "green")))
        else:
            lines.append(Text.assemble(server.address, (f"  unreachable: {server.error}", "red")))
    table.add_row("servers", Group(*lines))
    table.add_row("functions", Group(*(Text(name) for name in functions)))
    table.add_row("processes", str(processes))
    table.add_row("database", database)
    table.add_row("reload", "on: restarts when code changes" if reload else "off")
    table.add_row("metrics", metrics or "off")
    return Panel(table, title=f"gearworker {version}, pid {pid}", title_align="left", expand=False)
