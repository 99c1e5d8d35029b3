"""A run that lost its claim writes nothing and reports nothing (worker/claim.py).

Each test pauses a real ``gearworker`` process (SIGSTOP) past its lease, as a long GC
pause, a swapped VM or a frozen container would, while a second copy of its job (an
attach marker on a second gearmand, as a reviving attacher or the recovery sweep
sends) claims the record and runs. Then the paused process resumes and acts.
"""

from __future__ import annotations

import os
import re
import signal
from pathlib import Path

import pytest
from django.utils import timezone

from django_gearattach.clients import get_client
from django_gearattach.gearman.rendezvous import Address
from django_gearattach.models import Job, Status
from django_gearattach.testing import Gearmand, WorkerProcess, wait_for_workers
from tests.celeryapp.tasks import retry_once
from tests.conftest import executions
from tests.helpers import (
    AttachThread,
    key_homed_on,
    second_copy,
    wait_for_status,
    wait_until,
)

pytestmark = pytest.mark.django_db(transaction=True)

#: The workers' lease (GEARATTACH["LEASE"]): short, so that a pause outlasts it quickly.
LEASE = "1.5"


@pytest.fixture
def two_servers(gearmand_factory, settings, monkeypatch) -> tuple[Gearmand, Gearmand]:
    a, b = gearmand_factory(), gearmand_factory()
    settings.GEARATTACH = {**settings.GEARATTACH, "SERVERS": [a.address, b.address]}
    monkeypatch.setenv("GEARATTACH_LEASE", LEASE)
    return a, b


def pause_past_lease(worker: WorkerProcess, function: str, key: str) -> None:
    """SIGSTOP the worker and wait until its run's claim on the record has expired."""
    os.kill(worker.pid, signal.SIGSTOP)
    wait_until(
        lambda: Job.objects.get(function=function, key=key).lease_until < timezone.now(),
        what="the paused run's lease to expire",
    )


def handled(worker: WorkerProcess, function: str, key: str) -> bool:
    """Whether the worker logged the end of its handling of the job (any outcome)."""
    pattern = rf"job {re.escape(function)}\[{re.escape(key)}\] .* in [0-9.]+s \(server"
    return re.search(pattern, worker.output()) is not None


def forgotten(servers: tuple[Gearmand, ...], key: str) -> bool:
    return not any(
        get_client().status_unique(Address.parse(s.address), key.encode()).known for s in servers
    )


def test_a_paused_run_that_resumes_cannot_retry_under_the_run_that_holds_the_claim(
    two_servers, worker_factory, tmp_path
):
    """Row 1: the resumed run's self.retry() is refused (its claim is another run's):
    one retry, three bodies (the two copies of run 0, and run 1), never two runs of the
    job after the pause."""
    a, b = two_servers
    log, gate = tmp_path / "log", tmp_path / "gate"
    function = retry_once.name
    key = key_homed_on(a.address, "retry", function)
    paused = worker_factory([a])
    worker_factory([b])
    wait_for_workers(a.address, function)
    wait_for_workers(b.address, function)
    retry_once.apply_async(args=[str(log), str(gate)], task_id=key)
    wait_until(lambda: executions(log) == ["start-0"], what="run 0 on the first worker")
    pause_past_lease(paused, function, key)
    try:
        second_copy(b.address, function, key)
        wait_until(lambda: executions(log) == ["start-0"] * 2, what="the copy on the other")
    finally:
        os.kill(paused.pid, signal.SIGCONT)
    Path(gate).touch()
    record = wait_for_status(function, key, Status.COMPLETE)
    wait_until(lambda: handled(paused, function, key), what="the resumed run to end")
    wait_until(lambda: forgotten((a, b), key), what="gearmand to forget every copy")
    assert executions(log) == ["start-0", "start-0", "start-1"]
    record.refresh_from_db()
    assert (record.status, record.retries, record.result) == (Status.COMPLETE, 1, "retried")
    assert "lost its claim" in paused.output()


def test_a_paused_run_whose_claim_holder_died_leaves_the_job_to_run_again(
    two_servers, worker_factory, log_path, tmp_path
):
    """Row 2: the claim's new holder dies mid-run; the resumed run writes nothing (no
    ``lost``), so the copy that gearmand requeued runs and completes, and the attacher
    of the paused run's copy hears that outcome."""
    a, b = two_servers
    gate = tmp_path / "gate"
    key = key_homed_on(a.address, "holder-died")
    paused, holder = worker_factory([a]), worker_factory([b])
    wait_for_workers(b.address, "tests.record")
    from django_gearattach import submit

    submit("tests.record", [str(log_path)], {"gate": str(gate)}, key=key)
    wait_until(lambda: len(executions(log_path)) == 1, what="the run on the first worker")
    attacher = AttachThread("tests.record", key, timeout=60)
    attacher.start()
    wait_until(
        lambda: get_client().status_unique(Address.parse(a.address), key.encode()).clients,
        what="the attacher on the first server",
    )
    pause_past_lease(paused, "tests.record", key)
    try:
        second_copy(b.address, "tests.record", key)
        wait_until(lambda: len(executions(log_path)) == 2, what="the copy on the other")
        holder.stop(signal.SIGKILL)  # the claim's holder dies mid-run
    finally:
        os.kill(paused.pid, signal.SIGCONT)
    Path(gate).touch()
    wait_until(lambda: handled(paused, "tests.record", key), what="the resumed run to end")
    assert Job.objects.get(key=key).status == Status.RUNNING  # nothing written: not lost
    worker_factory([b])  # runs the copy gearmand requeued when its holder died
    record = wait_for_status("tests.record", key, Status.COMPLETE)
    events = attacher.result()
    assert events[-1].event == "complete"
    assert events[-1].result == record.result
    assert len(executions(log_path)) == 3


def test_a_watchdog_whose_run_lost_its_claim_sends_nothing(
    two_servers, worker_factory, log_path, tmp_path
):
    """Row 3: the resumed run is past its hard limit; its watchdog's write matches no
    row, so it sends no WORK_FAIL: the attacher hears the outcome of the run that holds
    the claim, never "failed"."""
    a, b = two_servers
    gate = tmp_path / "gate"
    key = key_homed_on(a.address, "hard", "tests.gated_limit")
    paused, other = worker_factory([a]), worker_factory([b])
    wait_for_workers(b.address, "tests.gated_limit")
    from django_gearattach import submit

    submit("tests.gated_limit", [str(log_path), str(gate)], key=key)
    wait_until(lambda: len(executions(log_path)) == 1, what="the run on the first worker")
    started = timezone.now()
    attacher = AttachThread("tests.gated_limit", key, timeout=60)
    attacher.start()
    wait_until(
        lambda: get_client().status_unique(Address.parse(a.address), key.encode()).clients,
        what="the attacher on the first server",
    )
    pause_past_lease(paused, "tests.gated_limit", key)
    try:
        second_copy(b.address, "tests.gated_limit", key)
        wait_until(lambda: len(executions(log_path)) == 2, what="the copy on the other")
        # Past the paused run's hard limit (3 s) before it resumes.
        wait_until(lambda: (timezone.now() - started).total_seconds() > 3.2, what="3.2 s")
    finally:
        os.kill(paused.pid, signal.SIGCONT)
    wait_until(lambda: "hard time limit (3s)" in paused.output(), what="the paused watchdog")
    Path(gate).touch()
    record = wait_for_status("tests.gated_limit", key, Status.COMPLETE)
    events = attacher.result()
    assert [e.event for e in events if e.terminal] == ["complete"]
    assert record.result == "opened"
    assert len(executions(log_path)) == 2
    assert other.process.poll() is None
