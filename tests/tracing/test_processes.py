"""Traces across real processes: this test submits and attaches (its spans in memory),
a real gearmand holds the jobs, and a real ``gearworker`` process (tests/tracing/
settings.py: the SDK, a batch processor writing to a file, the Django and database
instrumentations) runs them. Each test stops the worker, whose spans are exported as
it exits, and checks the parent/child and link structure of the whole trace."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest
from django.db import connection
from django.test import Client

from django_gearattach import attach, cancel, submit
from django_gearattach.models import Job
from django_gearattach.testing import Gearmand, WorkerProcess
from tests.conftest import ROOT
from tests.helpers import wait_for_status, wait_until
from tests.tracing.exporting import Spans

pytestmark = pytest.mark.django_db(transaction=True)


class TracedWorker:
    """A ``gearworker`` process with tracing on; :meth:`spans` stops it and reads them."""

    def __init__(self, gearmand: Gearmand, path: Path, env: dict[str, str]) -> None:
        self.path = path
        self.process = WorkerProcess(
            [gearmand.address], "tests.tracing.settings", env=env, cwd=str(ROOT)
        ).start()

    def spans(self) -> Spans:
        code = self.process.stop()
        assert code == 0, self.process.output()
        return Spans.read(self.path)


@pytest.fixture
def traced_worker(gearmand, recorded, tmp_path, monkeypatch) -> Any:
    env = {
        "GEARATTACH_TEST_DATABASE": str(connection.settings_dict["NAME"]),
        "GEARATTACH_TEST_SPANS": str(tmp_path / "spans.jsonl"),
        "GEARATTACH_CANCEL_CHECK_INTERVAL": "0.1",
    }
    if os.environ.get("DATABASE_URL"):
        env["DATABASE_URL"] = os.environ["DATABASE_URL"]
    worker = TracedWorker(gearmand, tmp_path / "spans.jsonl", env)
    yield worker
    worker.process.cleanup()


def run_span(spans: Spans, function: str) -> dict[str, Any]:
    return next(s for s in spans.named(function) if s["kind"] == "CONSUMER" and s["pid"])


def test_a_run_is_the_child_of_its_submitter_and_the_task_spans_nest_under_it(
    traced_worker, recorded, tracer
):
    with tracer.start_as_current_span("request") as request:
        job = submit("tests.traced")
    events = [e.event for e in attach(job, timeout=30)]
    assert events[-1] == "complete"
    mine = recorded.spans()
    theirs = traced_worker.spans()

    submitter = mine.one("request")
    run = theirs.one("tests.traced")
    assert request.get_span_context().trace_id == int(run["trace_id"], 16)
    assert (run["trace_id"], run["parent_id"]) == (submitter["trace_id"], submitter["span_id"])
    assert run["kind"] == "CONSUMER"
    attributes = run["attributes"]
    assert attributes["gearattach.key"] == job.key
    assert "gearattach.attempt" not in attributes  # read only for a run that did not complete
    assert attributes["gearattach.outcome"] == "complete"
    assert attributes["gearattach.queue_wait"] >= 0
    record = Job.objects.get(pk=job.pk)
    assert attributes["gearattach.execution"] == record.execution != ""
    assert [e for e in run["events"] if e in ("gearattach.progress", "gearattach.data")] == [
        "gearattach.progress",
        "gearattach.data",
    ]
    assert "gearattach.submit" in submitter["events"]

    # The task's own span and the database's spans inside it are the run's children.
    inside = theirs.one("inside the task")
    assert inside["parent_id"] == run["span_id"]
    queries = [s for s in theirs.children_of(inside) if s["kind"] == "CLIENT"]
    assert queries, theirs.names()

    # The attacher (this process, outside the request) links to the submitter.
    attacher = mine.one("attach tests.traced")
    assert attacher["parent_id"] is None
    assert [(x["trace_id"], x["span_id"]) for x in attacher["links"]] == [
        (submitter["trace_id"], submitter["span_id"])
    ]
    assert attacher["attributes"]["gearattach.outcome"] == "complete"


def test_a_retry_is_a_second_child_of_the_submitter_linked_to_the_run_that_asked(
    traced_worker, recorded, tracer, log_path
):
    from tests.celeryapp.tasks import flaky

    with tracer.start_as_current_span("request"):
        result = flaky.delay(str(log_path), 1)
    assert result.get(timeout=30) == {"attempt": 2, "retries": 1}
    submitter = recorded.spans().one("request")
    runs = traced_worker.spans().named("tests.celeryapp.tasks.flaky")
    assert len(runs) == 2, runs
    first, second = sorted(runs, key=lambda s: len(s["links"]))
    for run in (first, second):
        assert (run["trace_id"], run["parent_id"]) == (submitter["trace_id"], submitter["span_id"])
    assert first["attributes"]["gearattach.outcome"] == "retry"
    assert "gearattach.retry" in first["events"]
    assert first["links"] == []
    assert second["attributes"]["gearattach.outcome"] == "complete"
    assert [(x["span_id"], x["attributes"]) for x in second["links"]] == [
        (first["span_id"], {"gearattach.link": "retry"})
    ]


def test_a_rerun_is_the_child_of_its_own_submitter_linked_to_the_last_runs_trace(
    traced_worker, recorded, tracer, log_path
):
    with tracer.start_as_current_span("first request"):
        job = submit("tests.record", kwargs={"log_path": str(log_path)}, key="again")
    assert [e.event for e in attach(job, timeout=30)][-1] == "complete"
    with tracer.start_as_current_span("second request"):
        job = submit("tests.record", kwargs={"log_path": str(log_path)}, key="again", rerun=True)
    assert [e.event for e in attach(job, timeout=30)][-1] == "complete"
    mine = recorded.spans()
    first, second = mine.one("first request"), mine.one("second request")
    runs = traced_worker.spans().named("tests.record")
    assert len(runs) == 2
    by_parent = {run["parent_id"]: run for run in runs}
    assert set(by_parent) == {first["span_id"], second["span_id"]}
    rerun = by_parent[second["span_id"]]
    assert rerun["trace_id"] == second["trace_id"] != first["trace_id"]
    assert [(x["trace_id"], x["span_id"], x["attributes"]) for x in rerun["links"]] == [
        (first["trace_id"], first["span_id"], {"gearattach.link": "rerun"})
    ]
    assert by_parent[first["span_id"]]["links"] == []


def test_a_time_limit_ends_the_run_span_before_the_watchdog_ends_the_process(
    traced_worker, recorded, tracer, log_path
):
    with tracer.start_as_current_span("request"):
        job = submit("tests.spin_hard", kwargs={"log_path": str(log_path)})
    events = [e for e in attach(job, timeout=30)]
    assert events[-1].event == "failed"
    assert "time limit" in events[-1].error
    # Exported by the process the watchdog ended, before it started anew (exec): no
    # exit handler ran there. (SIGTERM is sent only once the new process listens: a
    # stop asked for between the limit and the exec is not carried over.)
    wait_until(lambda: Spans.read(traced_worker.path).named("tests.spin_hard"), what="span")
    wait_until(lambda: traced_worker.process.output().count("process(es) on") == 2)
    time.sleep(0.5)
    submitter = recorded.spans().one("request")
    run = traced_worker.spans().one("tests.spin_hard")
    assert run["parent_id"] == submitter["span_id"]
    assert run["status"] == "ERROR"
    assert run["attributes"]["gearattach.outcome"] == "failed"
    assert "gearattach.time_limit" in run["events"]


def test_a_cancel_is_an_event_of_the_run_which_ends_cancelled(
    traced_worker, recorded, tracer, log_path
):
    with tracer.start_as_current_span("request"):
        job = submit("tests.cancellable", kwargs={"log_path": str(log_path)})
    wait_for_status("tests.cancellable", job.key, "running")
    wait_until(lambda: Job.objects.get(pk=job.pk).progress_numerator > 0, what="progress")
    cancel(job)
    wait_for_status("tests.cancellable", job.key, "cancelled")
    run = traced_worker.spans().one("tests.cancellable")
    assert run["parent_id"] == recorded.spans().one("request")["span_id"]
    assert "gearattach.cancel_requested" in run["events"]
    assert run["attributes"]["gearattach.outcome"] == "cancelled"
    assert run["status"] != "ERROR"


def test_an_offloaded_request_under_the_django_instrumentation_is_the_runs_parent(
    traced_worker, recorded
):
    from opentelemetry.instrumentation.django import DjangoInstrumentor

    DjangoInstrumentor().instrument()
    try:
        response = Client().get("/offload/sync/", {"colour": "red"})
    finally:
        DjangoInstrumentor().uninstrument()
    assert response.status_code == 202
    job = Job.objects.get(function="gearattach.offload")
    assert [e.event for e in attach(job, timeout=30)][-1] == "complete"
    (server,) = [s for s in recorded.spans().items if s["kind"] == "SERVER"]
    run = traced_worker.spans().one("gearattach.offload")
    assert (run["trace_id"], run["parent_id"]) == (server["trace_id"], server["span_id"])
    # The context rides inside the request the web process signed, not beside it.
    stored = job.arguments["kwargs"]["request"]["trace"]
    assert stored["traceparent"].startswith(f"00-{server['trace_id']}-{server['span_id']}-")
    assert "trace" not in job.arguments
