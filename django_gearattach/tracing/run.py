"""The worker's span around each run of a task.

:class:`RunTracer` is the worker loop's hook (``Worker.tracing``, set when
``GEARATTACH["TRACING"]`` is on). Each run of a task gets one span:

* named after the task, of kind ``CONSUMER``, a child of the span that submitted the
  job (:mod:`.carrier`), with a link to the run that asked for a retry, or to the
  last run's trace for a rerun; a job submitted outside any trace starts one;
* current while the task runs, so the spans of Django's and the database's
  instrumentations inside the task, and the task's own, are its children;
* attributes: ``messaging.system`` (``gearman``), ``messaging.destination.name``
  (the task), ``gearattach.key``, ``gearattach.attempt`` (for a run that did not
  complete: the starts of this run, as the record counts them),
  ``gearattach.queue_wait`` (seconds from the submit, or from the time it was
  scheduled for, to the start: the two hosts' clocks),
  ``gearattach.execution`` (the run's claim) and, when it ends,
  ``gearattach.outcome``: ``complete``, ``failed``, ``cancelled``, ``retry`` (the
  task asked to run again) or ``superseded`` (the run lost its claim: another copy's
  outcome counts);
* events: ``gearattach.progress``, ``gearattach.data``, ``gearattach.warning`` (and
  one per other report a task makes), ``gearattach.cancel_requested``,
  ``gearattach.soft_time_limit``, ``gearattach.time_limit``,
  ``gearattach.cancel_grace_ended`` (the watchdog ended the job: the span ends and is
  flushed before the process ends), ``gearattach.retry``, and the task's exception.

Nothing of this may fail a job: an error in it is logged and the task runs on.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from django.db import DatabaseError
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from .. import records
from ..payload import TRACE
from ..tasks import JobContext
from . import tracer
from .carrier import Running, carried, parent_and_links, running

if TYPE_CHECKING:  # the worker imports this module, not the other way round
    from ..worker.claim import Claim

logger = logging.getLogger("django_gearattach.tracing")

#: Milliseconds the span processors get to export what they hold before a process ends.
FLUSH_TIMEOUT_MS = 5000
_TRACE_KEY = f'"{TRACE}"'.encode()


class _Run:
    """One run's span; the worker's thread and the watchdog's both end it, once."""

    def __init__(self, span: Span) -> None:
        self.span = span
        self.outcome: str | None = None
        self._lock = threading.Lock()
        self._ended = False

    def on_outcome(self, status: str, value: Any) -> None:
        """The task's outcome callback: called once the outcome is committed."""
        self.outcome = str(status)
        if isinstance(value, BaseException):
            self.span.record_exception(value)
            if status == "failed":
                self.span.set_status(Status(StatusCode.ERROR, f"{type(value).__name__}: {value}"))

    def end(self, outcome: str, error: str | None = None) -> bool:
        with self._lock:
            if self._ended:
                return False
            self._ended = True
        self.span.set_attribute("gearattach.outcome", outcome)
        if error is not None:
            self.span.set_status(Status(StatusCode.ERROR, error))
        self.span.end()
        return True


class _Events:
    """The task's reporter, recording each report as an event of the run's span."""

    def __init__(self, reporter: Any, span: Span) -> None:
        self._reporter = reporter
        self._span = span
        self._streamed = False

    def progress(self, numerator: int, denominator: int) -> None:
        self._span.add_event(
            "gearattach.progress",
            {"gearattach.numerator": numerator, "gearattach.denominator": denominator},
        )
        self._reporter.progress(numerator, denominator)

    def data(self, value: Any) -> None:
        # The value itself stays out of the trace: it may be large, or personal.
        self._span.add_event("gearattach.data", {"gearattach.type": type(value).__name__})
        self._reporter.data(value)

    def warning(self, message: str) -> None:
        self._span.add_event("gearattach.warning", {"gearattach.message": message[:1000]})
        self._reporter.warning(message)

    def stream(self, chunk: Any) -> None:
        # One event per run's first chunk, not per chunk: a stream may have thousands.
        if not self._streamed:
            self._streamed = True
            self._span.add_event("gearattach.stream")
        self._reporter.stream(chunk)

    async def astream(self, chunk: Any) -> None:
        if not self._streamed:
            self._streamed = True
            self._span.add_event("gearattach.stream")
        await self._reporter.astream(chunk)

    def __getattr__(self, name: str) -> Any:
        """Any other report (a stream's chunks...) is an event named after it."""
        found = getattr(self._reporter, name)
        if not callable(found) or name.startswith("_"):
            return found

        def report(*args: Any, **kwargs: Any) -> Any:
            self._span.add_event(f"gearattach.{name}")
            return found(*args, **kwargs)

        return report


def _carrier(function: str, payload: bytes | dict[str, Any], kwargs: dict[str, Any]) -> Any:
    if isinstance(payload, dict):
        return carried(function, payload)
    offloaded = carried(function, {"kwargs": kwargs})
    if offloaded is not None or _TRACE_KEY not in payload:
        return offloaded
    try:  # decoded once more only when the payload carries a trace
        return carried(function, json.loads(payload))
    except ValueError:
        return None


class RunTracer:
    """The worker loop's tracing hook: :meth:`run` runs a task inside its span."""

    def __init__(self, watchdog: Any = None) -> None:
        self.tracer = tracer()
        self.active: _Run | None = None
        if watchdog is not None:
            watchdog.on_event = self.watchdog_event

    def run(
        self,
        call: Callable[..., str],
        claim: Claim,
        args: list[Any],
        kwargs: dict[str, Any],
        reporter: Any,
        context: JobContext,
        payload: bytes | dict[str, Any],
    ) -> str:
        """``call(claim, args, kwargs, reporter, context)`` inside the run's span."""
        function, key, execution = claim.function, claim.key, claim.execution
        carrier = _carrier(function, payload, kwargs)
        parent, links = parent_and_links(carrier)
        attributes: dict[str, Any] = {
            "messaging.system": "gearman",
            "messaging.destination.name": function,
            "gearattach.key": key,
            "gearattach.execution": execution,
        }
        wait = _queue_wait(carrier)
        if wait is not None:  # given at the start: one attribute set the less per job
            attributes["gearattach.queue_wait"] = wait
        span = self.tracer.start_span(
            function, context=parent, kind=SpanKind.CONSUMER, links=links, attributes=attributes
        )
        run = _Run(span)
        if span.is_recording():
            context._reporter = _Events(context._reporter, span)
            context.on_outcome(run.on_outcome)
        token = otel_context.attach(trace.set_span_in_context(span, parent))
        marker = running.set(Running(function, key, carrier, span))
        self.active = run
        try:
            word = call(claim, args, kwargs, reporter, context)
        except BaseException as exc:
            span.record_exception(exc)
            run.end("abandoned", f"{type(exc).__name__}: {exc}")
            raise
        finally:
            self.active = None
            running.reset(marker)
            otel_context.detach(token)
        outcome = "retry" if word == "rescheduled" else run.outcome or "superseded"
        if outcome == "retry":
            span.add_event("gearattach.retry")
        if outcome not in ("complete", "retry") and span.is_recording():
            self._attempt(span, function, key)
        run.end(outcome)
        return word

    def _attempt(self, span: Span, function: str, key: str) -> None:
        """The starts of a run that did not complete, as the record counts them (a read
        that a completed run is spared)."""
        try:
            attempt = records.attempts(function, key)
        except DatabaseError as exc:
            logger.warning("tracing %s[%s]: the record could not be read: %s", function, key, exc)
            return
        if attempt is not None:
            span.set_attribute("gearattach.attempt", attempt)

    def watchdog_event(self, name: str, attributes: dict[str, Any]) -> None:
        """The watchdog's news about the running job (it calls this from its thread)."""
        run = self.active
        if run is None:
            return
        if name != "ended":
            run.span.add_event(f"gearattach.{name}", _attributes(attributes))
            return
        # The watchdog ended the job: its process ends next, so the span is ended and
        # exported now.
        status = str(attributes.get("status", "failed"))
        error = str(attributes.get("error", ""))
        event = "gearattach.time_limit" if status == "failed" else "gearattach.cancel_grace_ended"
        run.span.add_event(event, {"gearattach.error": error})
        if run.end(status, error if status == "failed" else None):
            flush()


def _queue_wait(carrier: Any) -> float | None:
    """Seconds from the submitter's clock, or the time it was scheduled for, to now."""
    sent_at = carrier.get("sent_at") if carrier else None
    if not isinstance(sent_at, float):
        return None
    not_before = carrier.get("not_before")
    since = max(sent_at, not_before) if isinstance(not_before, float) else sent_at
    return max(time.time() - since, 0.0)


def _attributes(values: dict[str, Any]) -> dict[str, Any]:
    return {
        f"gearattach.{name}": value
        for name, value in values.items()
        if isinstance(value, str | bool | int | float)
    }


def flush() -> None:
    """Export the spans the SDK holds (before a worker process ends without ``atexit``)."""
    provider = trace.get_tracer_provider()
    force_flush = getattr(provider, "force_flush", None)
    if force_flush is None:
        return
    try:
        force_flush(FLUSH_TIMEOUT_MS)
    except Exception:  # never keep a worker from ending
        logger.exception("tracing: the spans could not be flushed")
