"""Prometheus metrics: a gearworker's --metrics-port and the web view, scraped after real jobs."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator

import pytest
from django.contrib.auth.models import User
from django.test import Client
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
    gearmand, worker_factory, monkeypatch, admin_client, counting
):
    client = admin_client  # the view answers staff (and a scraper's token) only
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


# -- review 3, finding 7: who may scrape, and what a scrape costs ---------------------------
def staff_client() -> Client:
    user = User.objects.create_user("scraper", password="pw", is_staff=True)
    client = Client()
    client.force_login(user)
    return client


def test_the_web_view_answers_staff_and_the_scrapers_token_only(gearmand, settings):
    """The view told anyone who asked the gearmand addresses and function names."""
    anonymous = Client().get("/metrics/")
    assert anonymous.status_code == 403
    assert gearmand.address not in anonymous.content.decode()
    member = User.objects.create_user("member", password="pw")
    signed_in = Client()
    signed_in.force_login(member)
    assert signed_in.get("/metrics/").status_code == 403
    staff = staff_client().get("/metrics/")
    assert staff.status_code == 200
    assert gearmand.address in staff.content.decode()
    settings.GEARATTACH = {**settings.GEARATTACH, "METRICS_TOKEN": "scrape-secret-7f3a"}
    bearer = {"Authorization": "Bearer scrape-secret-7f3a"}
    assert Client().get("/metrics/", headers=bearer).status_code == 200
    wrong = {"Authorization": "Bearer scrape-secret-0000"}
    assert Client().get("/metrics/", headers=wrong).status_code == 403


def connections_to(port: int) -> int:
    """Established TCP connections to 127.0.0.1:``port`` (a stopped gearmand still has
    the kernel accept them)."""
    out = subprocess.run(
        ["ss", "-Htn", "state", "established", f"( dport = :{port} )"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return len([line for line in out.splitlines() if line.strip()])


def test_concurrent_scrapes_share_one_probe_of_a_stalled_gearmand(gearmand_factory, settings):
    """20 scrapes with one stalled gearmand took 4.2 s each and opened a connection each."""
    stalled = gearmand_factory()
    settings.GEARATTACH = {**settings.GEARATTACH, "SERVERS": [stalled.address]}
    clients = [staff_client()] + [Client() for _ in range(19)]
    for client in clients[1:]:
        client.cookies = clients[0].cookies
    answers: list[int] = []
    most = 0
    os.kill(stalled.pid, signal.SIGSTOP)
    try:
        threads = [
            threading.Thread(target=lambda c=c: answers.append(c.get("/metrics/").status_code))
            for c in clients
        ]
        for thread in threads:
            thread.start()
        while any(thread.is_alive() for thread in threads):
            most = max(most, connections_to(stalled.port))
            time.sleep(0.05)
    finally:
        os.kill(stalled.pid, signal.SIGCONT)
    assert answers == [200] * 20
    assert most == 1  # one probe for all of them
    # And the next scrape, within the cache's life, asks gearmand nothing.
    before = connections_to(stalled.port)
    assert clients[0].get("/metrics/").status_code == 200
    assert connections_to(stalled.port) == before
