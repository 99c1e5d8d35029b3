"""Cancelling running jobs against real gearmand and gearworker processes (cancelling.py)."""

from __future__ import annotations

import io
import time
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.utils import timezone

from django_gearattach import cancel, submit
from django_gearattach.celery import states
from django_gearattach.celery.result import AsyncResult
from django_gearattach.clients import get_client
from django_gearattach.exceptions import JobNotFound
from django_gearattach.gearman.rendezvous import Address
from django_gearattach.models import Job, Status
from django_gearattach.operations import Cancel
from django_gearattach.worker.recovery import Sweeper
from tests.conftest import executions
from tests.helpers import AttachThread, wait_for_status, wait_until

pytestmark = pytest.mark.django_db(transaction=True)


def _known(address: str, key: str) -> bool:
    return get_client().status_unique(Address.parse(address), key.encode()).known


def _started(function: str, log_path, gearmand) -> tuple[Job, AttachThread]:
    job = submit(function, [str(log_path)])
    wait_for_status(function, job.key, Status.RUNNING)
    wait_until(lambda: executions(log_path), what="the task to start")
    attacher = AttachThread(function, job.key)
    attacher.start()
    return job, attacher


def test_cancel_stops_a_task_at_its_next_progress_report(gearmand, worker, log_path):
    job, attacher = _started("tests.cancellable", log_path, gearmand)
    assert cancel("tests.cancellable", job.key).verdict is Cancel.REQUESTED
    assert cancel(job).verdict is Cancel.REQUESTED  # asking twice is asking once
    events = attacher.result()
    assert events[-1].event == "failed"
    assert events[-1].error is not None
    assert "was cancelled" in events[-1].error
    record = Job.objects.get(pk=job.pk)
    assert record.status == Status.CANCELLED
    assert record.exception_qualname == "JobCancelled"
    assert record.cancel_requested_at is not None
    assert executions(log_path)[1:] == ["cleaned-up"]  # it caught it and cleaned up
    # gearmand forgot it (no requeue), and the recovery sweep leaves it alone.
    assert not _known(gearmand.address, job.key)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("django_gearattach.worker.recovery.conf", _NoGrace())
        sweeper = Sweeper()
        assert sweeper.sweep() == []
        assert sweeper.sweep() == []
    record.refresh_from_db()
    assert (record.status, record.attempts) == (Status.CANCELLED, 1)
    assert len(executions(log_path)) == 2
    # The worker process goes on.
    after = submit("tests.add", [1, 2])
    assert wait_for_status("tests.add", after.key, Status.COMPLETE).worker_pid == worker.pid
    # Running the key again starts a run that nobody cancelled.
    again = submit("tests.cancellable", [str(log_path)], key=job.key, rerun=True)
    assert Job.objects.get(pk=again.pk).cancel_requested_at is None
    assert cancel(again).verdict in (Cancel.CANCELLED, Cancel.REQUESTED)


class _NoGrace:
    RECOVERY_GRACE = 0.0
    RECOVERY_INTERVAL = 0.0


def test_a_task_that_ignores_the_cancel_is_stopped_after_the_grace(
    gearmand, worker_factory, log_path, monkeypatch
):
    monkeypatch.setenv("GEARATTACH_CANCEL_GRACE", "1")
    monkeypatch.setenv("GEARATTACH_CANCEL_CHECK_INTERVAL", "0.1")
    worker_factory([gearmand])
    job, attacher = _started("tests.stubborn", log_path, gearmand)
    out = io.StringIO()
    call_command("gearattach", "cancel", "tests.stubborn", job.key, stdout=out)
    assert out.getvalue().strip() == "cancel requested: the worker running it stops it"
    events = attacher.result()
    assert events[-1].event == "failed"
    record = Job.objects.get(pk=job.pk)
    assert record.status == Status.CANCELLED
    assert record.error == ("JobCancelled: cancelled while it ran; stopped after 1s of grace")
    assert executions(log_path)[1:] == ["saw-cancel"]  # job.cancelled told it
    assert not _known(gearmand.address, job.key)
    # The process was started anew and runs the next job; the cancelled one never again.
    after = submit("tests.add", [2, 2])
    assert wait_for_status("tests.add", after.key, Status.COMPLETE).result == 4
    assert len(executions(log_path)) == 2


def test_celery_revoke_terminate_cancels_a_running_task(gearmand, worker, log_path):
    job, attacher = _started("tests.cancellable", log_path, gearmand)
    result = AsyncResult(job.key)
    result.revoke()  # as in Celery: without terminate, a running task goes on
    assert Job.objects.get(pk=job.pk).cancel_requested_at is None
    result.revoke(terminate=True)
    assert attacher.result()[-1].event == "failed"
    assert result.state == states.REVOKED


def test_cancel_of_finished_and_unknown_jobs(gearmand, worker):
    job = submit("tests.add", [1, 2])
    wait_for_status("tests.add", job.key, Status.COMPLETE)
    assert cancel(job).verdict is Cancel.FINISHED
    with pytest.raises(JobNotFound):
        cancel("tests.add", "no-such-key")
    with pytest.raises(TypeError, match="needs the job's key"):
        cancel("tests.add")
    out, err = io.StringIO(), io.StringIO()
    with pytest.raises(SystemExit) as finished:
        call_command("gearattach", "cancel", "tests.add", job.key, stdout=out, stderr=err)
    assert finished.value.code == 1
    assert "already finished" in out.getvalue()
    with pytest.raises(SystemExit) as unknown:
        call_command("gearattach", "cancel", "tests.add", "nope", stdout=out, stderr=err)
    assert unknown.value.code == 2
    assert "no job 'tests.add' with key 'nope'" in err.getvalue()


def test_a_cancel_during_a_run_that_then_retries_ends_the_job_cancelled(
    gearmand, worker_factory, monkeypatch, tmp_path
):
    """The cancel was made for run 0, which retries (without looking at ``cancelled``):
    the retry is refused and the job ends cancelled; run 1 never starts."""
    from tests.celeryapp.tasks import retry_once

    monkeypatch.setenv("GEARATTACH_CANCEL_CHECK_INTERVAL", "0.1")
    worker = worker_factory([gearmand])
    log, gate = tmp_path / "log", tmp_path / "gate"
    result = retry_once.delay(str(log), str(gate))
    wait_until(lambda: executions(log) == ["start-0"], what="run 0")
    assert cancel(retry_once.name, result.id).verdict is Cancel.REQUESTED
    wait_until(lambda: "cancel requested" in worker.output(), what="the worker to see it")
    gate.touch()
    record = wait_for_status(retry_once.name, result.id, Status.CANCELLED)
    assert record.retries == 0
    assert "its retry is not run" in record.error
    wait_until(lambda: f"[{result.id}] failed in" in worker.output(), what="its log line")
    assert executions(log) == ["start-0"]


def test_a_cancel_made_for_a_run_does_not_reach_the_next_run(
    gearmand, worker_factory, monkeypatch, log_path, tmp_path
):
    """A run asked to cancel whose worker died before it saw the request: the recovery
    sweep resubmits the job, and its next run is not the run the cancel was made for."""
    for name, value in (
        ("CANCEL_CHECK_INTERVAL", "0.1"),
        ("CANCEL_GRACE", "0.3"),
        ("RECOVERY_INTERVAL", "0.3"),
        ("RECOVERY_GRACE", "0.3"),
    ):
        monkeypatch.setenv(f"GEARATTACH_{name}", value)
    gate = tmp_path / "gate"
    now = timezone.now()
    job = Job.objects.create(
        function="tests.record",
        key="cancelled-run",
        status=Status.RUNNING,
        arguments={"args": [str(log_path)], "kwargs": {"gate": str(gate)}},
        attempts=1,
        execution="d" * 32,
        lease_until=now - timedelta(seconds=1),  # its worker died: the claim expired
        worker_host="elsewhere",
        worker_pid=1,
        started_at=now - timedelta(seconds=5),
        cancel_requested_at=now - timedelta(seconds=2),
        server=gearmand.address,
    )
    worker = worker_factory([gearmand])
    wait_until(lambda: len(executions(log_path)) == 1, timeout=30, what="the next run")
    # Long enough for its watchdog to look (every 0.1 s) and for a grace (0.3 s) to end.
    time.sleep(1.5)
    assert Job.objects.get(pk=job.pk).status == Status.RUNNING
    gate.touch()
    assert wait_for_status("tests.record", job.key, Status.COMPLETE).recoveries == 1
    assert "cancel requested" not in worker.output()
