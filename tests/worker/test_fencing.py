"""Fenced execution against real gearmand: a task body runs at most once at a time."""

from __future__ import annotations

import os
import signal
from datetime import timedelta

import pytest
from django.utils import timezone

import tests.testapp.tasks  # noqa: F401  (registers the tasks the thread worker runs)
from django_gearattach import submit
from django_gearattach.clients import get_client
from django_gearattach.conf import conf
from django_gearattach.gearman.rendezvous import Address
from django_gearattach.models import Job, Status
from django_gearattach.tasks import get_task
from django_gearattach.worker.loop import Worker
from tests.conftest import executions
from tests.helpers import AttachThread, key_homed_on, thread_worker, wait_for_status, wait_until

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_server_unreachable_while_its_job_runs_never_lets_the_job_run_twice(
    gearmand_factory, worker_factory, settings, monkeypatch, log_path, tmp_path
):
    """Server A stops answering (SIGSTOP) while its job runs; an attacher revives the
    job on server B; A comes back while B's copy is held. The task body ran once, and
    every attacher got the one outcome."""
    a, b = gearmand_factory(), gearmand_factory()
    settings.GEARATTACH = {**settings.GEARATTACH, "SERVERS": [a.address, b.address]}
    settings.GEARATTACH["TIMEOUT"] = 1.0  # this process: a stopped server fails fast
    monkeypatch.setenv("GEARATTACH_LEASE", "1.5")  # the claim must be renewed to hold
    monkeypatch.setenv("GEARATTACH_TIMEOUT", "2")
    gate = tmp_path / "gate"
    key = key_homed_on(a.address, "fenced")
    workers = [worker_factory([a, b]), worker_factory([a, b])]
    submit("tests.record", [str(log_path)], {"gate": str(gate)}, key=key)
    running = wait_for_status("tests.record", key, Status.RUNNING)
    assert running.server == a.address
    first = AttachThread("tests.record", key, timeout=60)
    first.start()
    wait_until(
        lambda: get_client().status_unique(Address.parse(a.address), key.encode()).clients == 1,
        what="the first attacher on A",
    )
    os.kill(a.pid, signal.SIGSTOP)
    try:
        second = AttachThread("tests.record", key, timeout=60)
        second.start()  # A does not answer: it revives the job on B
        b_address = Address.parse(b.address)
        wait_until(
            lambda: get_client().status_unique(b_address, key.encode()).running,
            timeout=30,
            what="the revived copy running on B",
        )
    finally:
        os.kill(a.pid, signal.SIGCONT)  # A is back while B's copy runs
    # The first run renews its claim (the lease is 1.5 s) while B's copy waits on it.
    leases = set()

    def renewed_four_times() -> bool:
        leases.add(Job.objects.get(key=key).lease_until)
        return len(leases) >= 4

    wait_until(renewed_four_times, what="the first run renewing its claim")
    assert get_client().status_unique(b_address, key.encode()).running
    gate.touch()
    events_first, events_second = first.result(), second.result()
    record = Job.objects.get(key=key)
    assert record.status == Status.COMPLETE
    assert len(executions(log_path)) == 1  # the body ran once
    assert events_first[-1].event == events_second[-1].event == "complete"
    assert events_first[-1].result == events_second[-1].result == record.result
    assert record.attempts == 1
    assert record.lease_until is None
    logs = "".join(w.output() for w in workers)
    assert f"job tests.record[{key}] runs elsewhere (a live claim)" in logs
    assert f"job tests.record[{key}] answered from the record (complete)" in logs


def test_a_copy_that_finds_a_live_claim_waits_for_its_outcome(gearmand, log_path):
    """A second copy (here: the job delivered while another run holds its claim) does not
    run the task; its clients get the claim holder's outcome."""
    job = submit("tests.record", [str(log_path)])
    Job.objects.filter(pk=job.pk).update(
        status=Status.RUNNING,
        attempts=1,
        execution="e" * 32,
        lease_until=timezone.now() + timedelta(seconds=60),
        worker_host="elsewhere",
        worker_pid=1,
    )
    waiter = AttachThread("tests.record", job.key)
    waiter.start()
    worker = Worker([get_task("tests.record")], conf.SERVERS)
    with thread_worker(worker, 1):
        wait_until(
            lambda: (
                get_client()
                .status_unique(Address.parse(gearmand.address), job.key.encode())
                .running
            ),
            what="the copy held by the worker",
        )
        Job.objects.filter(pk=job.pk, execution="e" * 32).update(
            status=Status.COMPLETE, result={"done": "the other run"}, lease_until=None
        )
    events = waiter.result()
    assert events[-1].event == "complete"
    assert events[-1].result == {"done": "the other run"}
    assert executions(log_path) == []


def test_an_expired_claim_lets_the_next_copy_run(gearmand, log_path):
    job = submit("tests.record", [str(log_path)])
    Job.objects.filter(pk=job.pk).update(
        status=Status.RUNNING,
        attempts=1,
        execution="d" * 32,
        lease_until=timezone.now() - timedelta(seconds=1),
        worker_host="elsewhere",
        worker_pid=1,
    )
    worker = Worker([get_task("tests.record")], conf.SERVERS)
    with thread_worker(worker, 1):
        wait_for_status("tests.record", job.key, Status.COMPLETE)
    record = Job.objects.get(pk=job.pk)
    assert len(executions(log_path)) == 1
    assert record.attempts == 2
    assert record.execution not in ("", "d" * 32)


def test_a_claim_of_a_dead_process_on_this_host_is_taken_over_at_once(gearmand, log_path):
    import subprocess
    import sys

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    job = submit("tests.record", [str(log_path)])
    worker = Worker([get_task("tests.record")], conf.SERVERS)
    Job.objects.filter(pk=job.pk).update(
        status=Status.RUNNING,
        attempts=1,
        execution="c" * 32,
        lease_until=timezone.now() + timedelta(hours=1),  # would hold for an hour
        worker_host=worker.host,
        worker_pid=dead.pid,
    )
    with thread_worker(worker, 1):
        wait_for_status("tests.record", job.key, Status.COMPLETE)
    assert len(executions(log_path)) == 1
    assert Job.objects.get(pk=job.pk).attempts == 2


def test_a_run_that_lost_its_claim_does_not_write_its_outcome(gearmand, log_path, tmp_path):
    """Its lease expired and another run took the claim over: the late outcome is
    dropped, and its clients get the outcome of the run that holds the claim."""
    gate = tmp_path / "gate"
    job = submit("tests.record", [str(log_path)], {"gate": str(gate)})
    attacher = AttachThread("tests.record", job.key)
    worker = Worker([get_task("tests.record")], conf.SERVERS)
    with thread_worker(worker, 1):
        wait_until(lambda: len(executions(log_path)) == 1, what="the run to start")
        attacher.start()
        wait_until(
            lambda: (
                get_client()
                .status_unique(Address.parse(gearmand.address), job.key.encode())
                .clients
                == 1
            ),
            what="the attacher",
        )
        assert Job.objects.filter(pk=job.pk).update(execution="f" * 32) == 1  # taken over
        gate.touch()
        wait_until(lambda: Job.objects.get(pk=job.pk).status == Status.RUNNING, what="a check")
        Job.objects.filter(pk=job.pk, execution="f" * 32).update(
            status=Status.COMPLETE, result={"done": "the run with the claim"}, lease_until=None
        )
    events = attacher.result()
    assert events[-1].result == {"done": "the run with the claim"}
    assert Job.objects.get(pk=job.pk).result == {"done": "the run with the claim"}


def test_a_progress_write_renews_the_claim(gearmand, log_path, tmp_path):
    """The heartbeat rides on the progress write: no statement of its own."""
    gate = tmp_path / "gate"
    job = submit("tests.record", [str(log_path)], {"gate": str(gate), "steps": 3})
    worker = Worker([get_task("tests.record")], conf.SERVERS)
    with thread_worker(worker, 1):
        running = wait_until(
            lambda: Job.objects.filter(pk=job.pk, progress_numerator=3).first(),
            what="the three progress writes",
        )
        # The claim was set to started_at + LEASE; the progress writes moved it on (the
        # lease keeper renews only after LEASE / 3 = 10 s without a write).
        assert running.lease_until > running.started_at + timedelta(seconds=conf.LEASE)
        gate.touch()
    record = Job.objects.get(pk=job.pk)
    assert record.status == Status.COMPLETE
    assert record.execution == running.execution
