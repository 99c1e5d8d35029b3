"""The trace context that travels with a job, from its submitter to its worker.

``submit()`` in a traced request or task stores the caller's context (the global
propagator's fields: W3C ``traceparent`` and ``tracestate`` by default) under the
payload's ``"trace"`` key, which the record's ``arguments`` keep too (a job revived
from its record keeps its trace). An offloaded request carries it inside its signed
request instead (:mod:`~django_gearattach.web.handling`), so that a worker runs no
request whose context was changed on the way. Beside the context:

* ``sent_at``: the submitter's clock (epoch seconds), and for a scheduled job
  ``not_before``, the time it was scheduled for: the run's queue wait counts from
  the later;
* ``link`` and ``link_reason``: the span that the run links to: the run that asked
  for a retry (``"retry"``), or the trace of a finished job run again (``"rerun"``).

A retry keeps the first submitter's context, so every run of a job is a child of the
span that submitted it.
"""

from __future__ import annotations

import contextvars
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from opentelemetry import propagate, trace
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.context import Context
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.trace import Link, NonRecordingSpan, Span, SpanContext, TraceFlags
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from ..payload import TRACEPARENT, trace_of, traceparent_of
from ..web.messages import OFFLOAD_FUNCTION

if TYPE_CHECKING:
    from ..models import Job

#: Keys of the carrier that are ours, not the propagator's.
OWN_KEYS = frozenset({"sent_at", "not_before", "link", "link_reason"})
#: What a carrier read from gearmand may hold at most (anything else is ignored).
MAX_FIELDS = 16
MAX_VALUE = 1024

_w3c = TraceContextTextMapPropagator()
_baggage = W3CBaggagePropagator()
#: The global propagator last looked at, and whether it is OpenTelemetry's default
#: (W3C trace context, then W3C baggage), whose work :func:`_inject` and :func:`_extract`
#: do without its generic getters and setters (what a job costs: docs/benchmarks.rst).
_default: tuple[Any, bool] = (None, False)


def _is_default(textmap: Any) -> bool:
    global _default
    seen = _default
    if seen[0] is not textmap:
        parts = getattr(textmap, "_propagators", None)
        kinds = [type(part) for part in parts] if isinstance(parts, list | tuple) else []
        plain = kinds == [TraceContextTextMapPropagator, W3CBaggagePropagator]
        seen = _default = (textmap, isinstance(textmap, CompositePropagator) and plain)
    return seen[1]


def _inject(carrier: dict[str, Any], span: Span) -> None:
    """``propagate.inject(carrier)`` for the current ``span``, the same fields."""
    textmap = propagate.get_global_textmap()
    if not _is_default(textmap):
        textmap.inject(carrier)
        return
    context = span.get_span_context()
    if context != trace.INVALID_SPAN_CONTEXT:
        carrier["traceparent"] = traceparent(context)
        if context.trace_state:
            carrier["tracestate"] = context.trace_state.to_header()
    _baggage.inject(carrier)


def remote(value: str) -> SpanContext:
    """The span context of a ``traceparent`` (invalid if it is not one), as the W3C
    propagator reads it: directly when it is a plain version-00 one."""
    if TRACEPARENT.fullmatch(value):
        return SpanContext(
            int(value[3:35], 16),
            int(value[36:52], 16),
            is_remote=True,
            trace_flags=TraceFlags(int(value[53:55], 16)),
        )
    return trace.get_current_span(_w3c.extract({"traceparent": value})).get_span_context()


def _extract(fields: dict[str, str]) -> Context:
    """``propagate.extract(fields)``, the same context."""
    textmap = propagate.get_global_textmap()
    value = fields.get("traceparent")
    plain = value is not None and len(fields) == 1 and TRACEPARENT.fullmatch(value)
    if value is not None and plain and _is_default(textmap):
        # A plain W3C context, read as the default propagator reads it.
        return trace.set_span_in_context(NonRecordingSpan(remote(value)), Context())
    return textmap.extract(fields)


@dataclass(frozen=True, slots=True)
class Running:
    """The run going on in this thread (set by :mod:`.run`)."""

    function: str
    key: str
    carrier: dict[str, Any] | None
    span: Span


running: contextvars.ContextVar[Running | None] = contextvars.ContextVar(
    "gearattach_traced_run", default=None
)


def traceparent(context: SpanContext) -> str:
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}"


def carrier_for(
    function: str, key: str, rerun_of: Job | None = None, not_before: float | None = None
) -> dict[str, Any] | None:
    """The trace context a job submitted now carries; None outside a trace.

    A job submitted again from its own run (a retry) keeps its first submitter's
    context and links to this run; a finished job run again (``rerun_of``) links to
    the trace of its last run.
    """
    run = running.get()
    caller = trace.get_current_span()
    carrier: dict[str, Any]
    if run is not None and (run.function, run.key) == (function, key):
        first = {k: v for k, v in (run.carrier or {}).items() if k not in OWN_KEYS}
        link = traceparent(run.span.get_span_context())
        carrier = {**first, "link": link, "link_reason": "retry"}
    else:
        carrier = {}
        _inject(carrier, caller)
        before = None
        if rerun_of is not None:
            before = traceparent_of(rerun_of.arguments, offloaded(function))
        if before is not None:
            carrier |= {"link": before, "link_reason": "rerun"}
    if "traceparent" not in carrier and "link" not in carrier:
        return None
    carrier["sent_at"] = round(time.time(), 6)
    if not_before is not None:
        carrier["not_before"] = not_before
    if caller.is_recording():
        caller.add_event(
            "gearattach.submit", {"gearattach.function": function, "gearattach.key": key}
        )
    return carrier


def offloaded(function: str) -> bool:
    """Whether jobs of ``function`` are offloaded requests (their context is signed in)."""
    return function == OFFLOAD_FUNCTION


def carried(function: str, arguments: Any) -> dict[str, str | float] | None:
    """The carrier of a job's decoded arguments (as much of it as may be trusted)."""
    raw = trace_of(arguments, offloaded(function))
    if raw is None:
        return None
    clean: dict[str, str | float] = {}
    for name, value in list(raw.items())[:MAX_FIELDS]:
        number = isinstance(value, int | float) and not isinstance(value, bool)
        if name in ("sent_at", "not_before") and number:
            clean[name] = float(value)
        elif isinstance(name, str) and isinstance(value, str) and len(value) <= MAX_VALUE:
            clean[name] = value
    return clean


def parent_and_links(carrier: dict[str, Any] | None) -> tuple[Context | None, list[Link]]:
    """The context a run's span is a child of, and the spans it links to."""
    if carrier is None:
        return None, []
    fields = {k: v for k, v in carrier.items() if k not in OWN_KEYS and isinstance(v, str)}
    parent = _extract(fields) if fields else None
    links = []
    link = carrier.get("link")
    if isinstance(link, str):
        linked = remote(link)
        if linked.is_valid:
            reason = carrier.get("link_reason")
            attributes = {"gearattach.link": reason} if isinstance(reason, str) else None
            links.append(Link(linked, attributes))
    return parent, links


def job_link(function: str, arguments: Any, reason: str) -> Link | None:
    """A link to the span that submitted a stored job (its runs are its children)."""
    value = traceparent_of(arguments, offloaded(function))
    if value is None:
        return None
    linked = remote(value)
    return Link(linked, {"gearattach.link": reason}) if linked.is_valid else None
