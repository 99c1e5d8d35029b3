"""Prometheus metrics: a gearworker's --metrics-port and the web view, scraped after real jobs."""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from django_gearattach import attach, submit
from django_gearattach.metrics import receivers as metrics
from django_gearattach.testing import free_port, wait_for_workers

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def counting() -> Iterator[None]:
    """This test process counts as a web process with the metrics app would."""
    metrics.connect()
    yield
    metrics.disconnect()


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(found, name: str, **labels: str) -> float:
    return float(found.get((name, frozenset(labels.items())), 0.0))


def test_a_worker_and_a_web_process_expose_what_real_jobs_did(
    gearmand, worker_factory, monkeypatch, client, counting
):
    port = free_port()
    monkeypatch.setenv("GEARATTACH_TEST_METRICS", "1")  # the worker installs the metrics app
    worker = worker_factory([gearmand], "--concurrency", "2", "--metrics-port", str(port))
    wait_for_workers(gearmand.address, "tests.add", 2)
    web_before = samples(client.get("/metrics/").content.decode())

    jobs = [submit("tests.add", [i, i]) for i in range(3)] + [submit("tests.fail", ["no"])]
    outcomes = [list(attach(job, timeout=20))[-1].event for job in jobs]
    assert outcomes == ["complete", "complete", "complete", "failed"]

    response = client.get("/metrics/")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
    web = samples(response.content.decode())

    def web_delta(name: str, **labels: str) -> float:
        return value(web, name, **labels) - value(web_before, name, **labels)

    assert web_delta("gearattach_jobs_submitted_total", function="tests.add") == 3
    assert web_delta("gearattach_jobs_submitted_total", function="tests.fail") == 1
    assert web_delta("gearattach_attach_latency_seconds_count", function="tests.add") == 3
    assert value(web, "gearattach_gearmand_up", server=gearmand.address) == 1
    where = {"server": gearmand.address, "function": "tests.add"}
    assert value(web, "gearattach_gearmand_workers", **where) == 2
    assert value(web, "gearattach_gearmand_jobs_queued", **where) == 0

    # The supervisor's port: the sum over both worker processes (multiprocess mode).
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as scrape:
        workers = samples(scrape.read().decode())
    assert value(workers, "gearattach_jobs_started_total", function="tests.add") == 3
    assert value(workers, "gearattach_jobs_started_total", function="tests.fail") == 1
    finished = "gearattach_jobs_finished_total"
    assert value(workers, finished, function="tests.add", outcome="complete") == 3
    assert value(workers, finished, function="tests.fail", outcome="failed") == 1
    assert value(workers, "gearattach_run_seconds_count", function="tests.add") == 3
    assert value(workers, "gearattach_queue_wait_seconds_count", function="tests.add") == 3
    assert value(workers, "gearattach_queue_wait_seconds_sum", function="tests.add") >= 0
    assert value(workers, "gearattach_gearmand_workers", **where) == 2
    assert f"metrics    http://127.0.0.1:{port}/metrics" in worker.output()


def test_metrics_port_without_the_app_is_a_clear_error(gearmand, worker_factory):
    worker = worker_factory([gearmand], "--metrics-port", str(free_port()))
    assert worker.process.wait(30) != 0
    assert "--metrics-port needs 'django_gearattach.metrics' in INSTALLED_APPS" in (
        worker.output()
    )
