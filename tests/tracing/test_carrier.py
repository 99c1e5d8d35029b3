"""The trace context a job carries, from every way of submitting one (in this process:
immediate mode runs the job through the worker's own code, and its span)."""

from __future__ import annotations

import datetime
import json
from typing import Any

import pytest
from django.test import Client

from django_gearattach import submit
from django_gearattach.models import Job
from django_gearattach.payload import decode_arguments, dumps, trace_of, traceparent_of
from django_gearattach.submission import _Request
from django_gearattach.web.capture import verify
from django_gearattach.worker import immediate

pytestmark = pytest.mark.django_db


@pytest.fixture
def immediate_mode(settings, recorded):
    settings.GEARATTACH = {**settings.GEARATTACH, "IMMEDIATE": True}
    return recorded


def context_of(span) -> tuple[str, str]:
    context = span.get_span_context()
    return f"{context.trace_id:032x}", f"{context.span_id:016x}"


def test_a_job_submitted_in_a_span_carries_it_in_its_payload_and_record(recorded, tracer):
    with tracer.start_as_current_span("request") as span:
        request = _Request("tests.add", (1, 2), None, None, None, None, "")
    trace_id, span_id = context_of(span)
    payload = json.loads(request.data)
    assert payload["args"] == [1, 2]
    assert payload["trace"]["traceparent"].startswith(f"00-{trace_id}-{span_id}-")
    assert isinstance(payload["trace"]["sent_at"], float)
    assert request.arguments["trace"] == payload["trace"]  # the record keeps it too
    assert decode_arguments(request.data) == ([1, 2], {})  # workers take it in their stride


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [
        ((), None),
        ((1, 2.5, "é\n", None, [True]), {"when": datetime.date(2026, 1, 2), "n": {"1": []}}),
    ],
)
def test_the_payload_is_the_record_s_arguments_encoded(recorded, tracer, args, kwargs):
    """The carrier is added to the encoded arguments (not encoded again): the same bytes."""
    with tracer.start_as_current_span("request"):
        request = _Request("tests.add", args, kwargs, None, None, None, "")
    assert "trace" in request.arguments
    assert request.data == dumps(request.arguments)


def test_outside_any_trace_or_with_tracing_off_nothing_is_added(recorded, tracer, settings):
    assert b"trace" not in _Request("tests.add", (1, 2), None, None, None, None, "").data
    settings.GEARATTACH = {**settings.GEARATTACH, "TRACING": False}
    with tracer.start_as_current_span("request"):
        assert _Request("tests.add", (), None, None, None, None, "").data == b"{}"


def test_the_run_in_immediate_mode_is_a_child_of_the_submitter(immediate_mode, tracer):
    with tracer.start_as_current_span("request") as span:
        job = submit("tests.add", (1, 2))
    assert job.status == "complete"
    run = immediate_mode.spans().one("tests.add")
    assert (run["trace_id"], run["parent_id"]) == context_of(span)
    assert run["attributes"]["gearattach.outcome"] == "complete"
    assert "gearattach.attempt" not in run["attributes"]


def test_the_celery_shim_carries_the_context(immediate_mode, tracer):
    from tests.celeryapp.tasks import add

    with tracer.start_as_current_span("request") as span:
        result = add.delay(2, 3)
    assert result.get(timeout=5) == 5
    record = Job.objects.get(key=result.id)
    assert traceparent_of(record.arguments).startswith(f"00-{context_of(span)[0]}-")
    (run,) = [s for s in immediate_mode.spans().items if s["kind"] == "CONSUMER"]
    assert (run["trace_id"], run["parent_id"]) == context_of(span)


def test_the_django_tasks_backend_carries_the_context(immediate_mode, tracer):
    from tests.tasksapp import tasks as dtasks

    with tracer.start_as_current_span("request") as span:
        result = dtasks.add.enqueue(1, 2)
    assert result.return_value == 3
    assert traceparent_of(Job.objects.get(key=result.id).arguments) is not None
    (run,) = [s for s in immediate_mode.spans().items if s["kind"] == "CONSUMER"]
    assert (run["trace_id"], run["parent_id"]) == context_of(span)


@pytest.mark.parametrize(
    "carrier",
    [
        "not a dict",
        {"traceparent": "00-garbage"},
        {"traceparent": "00-" + "0" * 32 + "-" + "1" * 16 + "-01"},
        {"traceparent": "x" * 5000, "sent_at": "yesterday", "link": 5},
        {"traceparent": ["a list"], "link": "00-nonsense"},
    ],
)
def test_a_malformed_context_from_gearmand_is_ignored_and_the_job_runs(immediate_mode, carrier):
    job = Job.objects.create(function="tests.add", key="bad-trace")
    data = json.dumps({"args": [1, 2], "trace": carrier}).encode()
    assert immediate.run(job, data).status == "complete"
    run = immediate_mode.spans().one("tests.add")
    assert run["parent_id"] is None  # a trace of its own
    assert run["links"] == []
    assert run["attributes"]["gearattach.outcome"] == "complete"


def test_an_offloaded_request_signs_its_context_with_the_rest(immediate_mode, tracer):
    with tracer.start_as_current_span("request") as span:
        response = Client().get("/offload/sync/", {"colour": "red"})
    assert response.status_code == 200
    job = Job.objects.get(function="gearattach.offload")
    kwargs = job.arguments["kwargs"]
    assert trace_of(job.arguments) is None  # not beside the signed request: inside it
    carried = trace_of(job.arguments, offloaded=True)
    assert carried["traceparent"].startswith(f"00-{context_of(span)[0]}-")
    assert verify(kwargs["view"], kwargs["request"], job.key, kwargs["signature"])
    changed = {
        **kwargs["request"],
        "trace": {**carried, "traceparent": "00-" + "1" * 32 + "-" + "2" * 16 + "-01"},
    }
    assert not verify(kwargs["view"], changed, job.key, kwargs["signature"])
    run = immediate_mode.spans().one("gearattach.offload")
    assert (run["trace_id"], run["parent_id"]) == context_of(span)


TRACEPARENTS = [
    "00-" + "a" * 32 + "-" + "b" * 16 + "-01",
    "00-" + "a" * 32 + "-" + "b" * 16 + "-00",
    "00-" + "0" * 32 + "-" + "b" * 16 + "-01",
    "01-" + "a" * 32 + "-" + "b" * 16 + "-01-future",
    "ff-" + "a" * 32 + "-" + "b" * 16 + "-01",
    " 00-" + "a" * 32 + "-" + "b" * 16 + "-01",
    "00-" + "A" * 32 + "-" + "b" * 16 + "-01",
    "garbage",
]


@pytest.mark.parametrize("value", TRACEPARENTS)
def test_contexts_are_read_as_the_w3c_propagator_reads_them(value):
    """The short paths of tracing/carrier.py give what OpenTelemetry's own give."""
    from opentelemetry import propagate, trace

    from django_gearattach.tracing import carrier

    w3c = carrier._w3c.extract({"traceparent": value})
    assert carrier.remote(value) == trace.get_current_span(w3c).get_span_context()
    for fields in ({"traceparent": value}, {"traceparent": value, "tracestate": "a=1"}):
        assert read(carrier._extract(fields)) == read(propagate.extract(fields))


def read(context) -> dict[str, Any]:
    """A context's values, its span as its span context (spans compare by identity)."""
    from opentelemetry.trace import Span

    return {k: v.get_span_context() if isinstance(v, Span) else v for k, v in context.items()}


def test_a_context_is_written_as_the_global_propagator_writes_it(tracer):
    from opentelemetry import baggage, propagate, trace
    from opentelemetry import context as otel_context
    from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceState

    from django_gearattach.tracing import carrier

    def both() -> tuple[dict[str, Any], dict[str, Any]]:
        ours: dict[str, Any] = {}
        carrier._inject(ours, trace.get_current_span())
        theirs: dict[str, Any] = {}
        propagate.inject(theirs)
        return ours, theirs

    ours, theirs = both()
    assert ours == theirs == {}  # outside any span
    with tracer.start_as_current_span("request"):
        ours, theirs = both()
        assert ours == theirs
        assert set(ours) == {"traceparent"}
        token = otel_context.attach(baggage.set_baggage("user", "1"))
        try:
            ours, theirs = both()
            assert ours == theirs
            assert set(ours) == {"traceparent", "baggage"}
        finally:
            otel_context.detach(token)
    state = SpanContext(1, 2, False, trace_state=TraceState([("vendor", "x")]))
    with trace.use_span(NonRecordingSpan(state)):
        ours, theirs = both()
        assert ours == theirs
        assert ours["tracestate"] == "vendor=x"


def test_another_global_propagator_is_used_as_it_is(recorded, tracer):
    """Only OpenTelemetry's default propagator is done on the short path."""
    from opentelemetry import propagate
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    from django_gearattach.tracing import carrier

    class Upper(TraceContextTextMapPropagator):
        def inject(self, carrier, context=None, setter=None):
            super().inject(carrier, context)
            carrier["x-upper"] = carrier["traceparent"].upper()

    default = propagate.get_global_textmap()
    propagate.set_global_textmap(Upper())
    try:
        with tracer.start_as_current_span("request"):
            request = _Request("tests.add", (), None, None, None, None, "")
        carried = request.arguments["trace"]
        assert carried["x-upper"] == carried["traceparent"].upper()
        fields = {"traceparent": TRACEPARENTS[0]}
        assert read(carrier._extract(fields)) == read(propagate.extract(fields))
    finally:
        propagate.set_global_textmap(default)
