"""``--tracing``: the same end-to-end rows with the app's tracing off, then on; both with
OpenTelemetry's SDK (an exporter that drops every span: what tracing costs, not an
exporter's I/O) and a request's span around each submit, as a traced site has."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult


class DropExporter(SpanExporter):
    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


def set_up_sdk() -> None:
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(DropExporter()))
    trace.set_tracer_provider(provider)


def request_span() -> AbstractContextManager[Any]:
    """What a traced web request around a submit would be (the Django instrumentation's)."""
    return trace.get_tracer("bench").start_as_current_span("request")


ROWS = [
    ("async jobs/s", "rate", "{:,.0f}"),
    ("client CPU ms per job", "client_cpu_ms_per_job", "{:.3f}"),
    ("worker CPU ms per job", "worker_cpu_ms_per_job", "{:.3f}"),
    ("worker queries per job", "worker_queries_per_job", "{:.2f}"),
]


def report(columns: list[tuple[str, dict[str, Any] | None, dict[str, Any] | None]]) -> str:
    """One table: per database, tracing off, on, and on / off."""
    lines = []
    header = f"{'':<26}" + "".join(f"{name:>30}" for name, _, _ in columns)
    sub = f"{'':<26}" + "".join(f"{'off':>10}{'on':>10}{'on/off':>10}" for _ in columns)
    lines += [header, sub]
    for label, key, fmt in ROWS:
        cells = []
        for _, off, on in columns:
            if off is None or on is None:
                cells.append(f"{'n/a':>30}")
                continue
            ratio = on[key] / off[key] if off[key] else float("nan")
            cells.append(f"{fmt.format(off[key]):>10}{fmt.format(on[key]):>10}{ratio:>10.2f}")
        lines.append(f"{label:<26}" + "".join(cells))
    return "\n".join(lines)
