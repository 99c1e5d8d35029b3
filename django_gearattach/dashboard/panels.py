"""The dashboard's panels as HTML: what the page shows first and what the feed pushes."""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import urlencode

from django.template.loader import render_to_string
from django.urls import NoReverseMatch, reverse
from django.utils.translation import gettext

from ..conf import conf
from ..health import ServerHealth, probe_all
from . import charts
from .queries import FunctionStats, Snapshot, exemplar_traces

#: The panels, in page order; each is a template in gearattach/dashboard/.
PANELS = ("throughput", "latency", "servers", "lists")


def changelist_url(site: str = "admin") -> str:
    try:
        return reverse(f"{site}:django_gearattach_job_changelist")
    except NoReverseMatch:
        return ""


def servers() -> list[ServerHealth]:
    """Every configured gearmand's queue, asked in parallel with a short timeout."""
    return probe_all(conf.SERVERS, timeout=min(conf.TIMEOUT, 2.0))


def _link(base: str, snapshot: Snapshot, function: str, **extra: str) -> str:
    query = {"function": function, "finished_at__gte": snapshot.since.isoformat(), **extra}
    return f"{base}?{urlencode(query)}" if base else ""


def _trace(trace_id: str | None) -> dict[str, str] | None:
    if trace_id is None:
        return None
    url = conf.TRACE_URL.replace("{trace_id}", trace_id) if conf.TRACE_URL else ""
    return {"id": trace_id, "url": url}


def render(snapshot: Snapshot, health: Sequence[ServerHealth], changelist: str) -> dict[str, str]:
    """Each panel's HTML, keyed by its name."""
    scale_run = max((f.run.get(0.99, 0.0) for f in snapshot.functions), default=0.0)
    scale_wait = max((f.wait.get(0.99, 0.0) for f in snapshot.functions), default=0.0)
    rows = [
        {
            "stats": f,
            "wait": [charts.seconds(f.wait.get(p)) for p in (0.5, 0.95, 0.99)],
            "run": [charts.seconds(f.run.get(p)) for p in (0.5, 0.95, 0.99)],
            "wait_chart": charts.spread(f, scale_wait, "wait"),
            "run_chart": charts.spread(f, scale_run, "run"),
            "url": _link(changelist, snapshot, f.function),
        }
        for f in snapshot.functions
    ]

    def listed(
        items: list[FunctionStats], traces: dict[str, str] | None = None, **extra: str
    ) -> list[dict[str, object]]:
        return [
            {
                "stats": f,
                "p95": charts.seconds(f.run.get(0.95)),
                "url": _link(changelist, snapshot, f.function, **extra),
                "trace": _trace(traces.get(f.function)) if traces else None,
            }
            for f in items
        ]

    context = {
        "snapshot": snapshot,
        "hour_chart": charts.throughput(
            snapshot.hour, 1, gettext("Jobs finished per minute, last hour"), "gearattach-hour"
        ),
        "day_chart": charts.throughput(
            snapshot.day,
            15,
            gettext("Jobs finished per minute, last day (15-minute bars)"),
            "gearattach-day",
        ),
        "legend": charts.legend(),
        "rows": rows,
        "servers": health,
        # With tracing, the trace of the job behind each p95 figure: one small query.
        "slowest": listed(
            snapshot.slowest,
            exemplar_traces(snapshot.slowest) if conf.TRACING else None,
        ),
        "failing": listed(snapshot.failing, status__in="failed,lost"),
    }
    return {
        name: render_to_string(f"gearattach/dashboard/{name}.html", context) for name in PANELS
    }
