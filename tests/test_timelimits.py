"""Time limits against real gearmand and gearworker processes (timelimits.py, watchdog.py)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from django.db import connection, transaction
from django.test import override_settings

from django_gearattach import submit, task
from django_gearattach.clients import get_client
from django_gearattach.exceptions import GearattachError
from django_gearattach.gearman.rendezvous import Address
from django_gearattach.models import Job, Status
from django_gearattach.testing import wait_for_workers
from django_gearattach.timelimits import TimeLimits
from tests.conftest import executions
from tests.helpers import AttachThread, wait_for_status, wait_until

pytestmark = pytest.mark.django_db(transaction=True)


def _forgotten(address: str, key: str) -> bool:
    return not get_client().status_unique(Address.parse(address), key.encode()).known


def test_a_soft_limit_interrupts_a_sleep_and_the_task_cleans_up(gearmand, worker, log_path):
    job = submit("tests.sleep_soft", [str(log_path)])
    record = wait_for_status("tests.sleep_soft", job.key, Status.FAILED)
    assert record.error == "SoftTimeLimitExceeded: soft time limit (0.5s) exceeded"
    assert record.exception_qualname == "SoftTimeLimitExceeded"
    assert executions(log_path)[1:] == ["cleaned-up"]  # it ran once, and cleaned up
    assert record.attempts == 1
    # The process goes on: the next job runs in it.
    after = submit("tests.add", [1, 2])
    done = wait_for_status("tests.add", after.key, Status.COMPLETE)
    assert done.worker_pid == record.worker_pid == worker.pid


def test_a_soft_limit_reaches_a_pure_python_spin_that_may_then_return(gearmand, worker, log_path):
    job = submit("tests.spin_soft", [str(log_path)])
    record = wait_for_status("tests.spin_soft", job.key, Status.COMPLETE)
    assert record.result == "stopped"
    assert executions(log_path)[1:] == ["cleaned-up"]


def test_a_soft_limit_interrupts_a_blocking_socket_read(gearmand, worker, log_path):
    job = submit("tests.read_soft", [str(log_path)])
    record = wait_for_status("tests.read_soft", job.key, Status.FAILED)
    assert record.error == "SoftTimeLimitExceeded: soft time limit (0.5s) exceeded"
    assert len(executions(log_path)) == 1


def test_a_hard_limit_ends_a_pure_python_spin_and_attachers_hear_at_once(
    gearmand, worker_factory, log_path
):
    worker_factory([gearmand], "--concurrency", "2")
    wait_for_workers(gearmand.address, "tests.spin_hard", 2)
    job = submit("tests.spin_hard", [str(log_path)])
    running = wait_for_status("tests.spin_hard", job.key, Status.RUNNING)
    attacher = AttachThread("tests.spin_hard", job.key)
    attacher.start()
    events = attacher.result()
    assert events[-1].event == "failed"
    assert "hard time limit (1s) exceeded" in (events[-1].error or "")
    record = Job.objects.get(pk=job.pk)
    assert record.status == Status.FAILED
    assert record.error.startswith("TimeLimitExceeded: hard time limit (1s) exceeded")
    assert record.attempts == 1
    # The process that ran it is gone; gearmand forgot the job (no requeue, no rerun).
    assert running.worker_pid is not None
    wait_until(lambda: not _alive(running.worker_pid), what="the worker process to end")
    assert _forgotten(gearmand.address, job.key)
    assert len(executions(log_path)) == 1
    # The supervisor started another process: two run jobs again.
    wait_for_workers(gearmand.address, "tests.spin_hard", 2)
    after = submit("tests.add", [2, 3])
    assert wait_for_status("tests.add", after.key, Status.COMPLETE).result == 5


def test_a_hard_limit_ends_a_sleep_inside_a_c_call_in_a_single_process_worker(
    gearmand, worker, log_path
):
    job = submit("tests.c_sleep_hard", [str(log_path)])
    record = wait_for_status("tests.c_sleep_hard", job.key, Status.FAILED)
    assert "hard time limit (1s) exceeded" in record.error
    # --concurrency 1: the process started anew (same pid, a new program) and runs jobs.
    after = submit("tests.add", [1, 1])
    assert wait_for_status("tests.add", after.key, Status.COMPLETE).result == 2
    assert _forgotten(gearmand.address, job.key)
    assert len(executions(log_path)) == 1
    record.refresh_from_db()
    assert (record.status, record.attempts) == (Status.FAILED, 1)


def test_the_default_setting_applies_to_tasks_without_limits(
    gearmand, worker_factory, log_path, monkeypatch
):
    monkeypatch.setenv("GEARATTACH_SOFT_TIME_LIMIT", "0.5")
    worker_factory([gearmand])
    job = submit("tests.default_limits", [str(log_path)])
    record = wait_for_status("tests.default_limits", job.key, Status.FAILED)
    assert record.error == "SoftTimeLimitExceeded: soft time limit (0.5s) exceeded"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


# -- bad input -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("soft", "hard", "message"),
    [
        (None, 0, "time_limit must be a positive number of seconds, not 0"),
        (-1, None, "soft_time_limit must be a positive number of seconds, not -1"),
        (None, "60", "time_limit must be a number of seconds or None, not '60'"),
        (True, None, "soft_time_limit must be a number of seconds or None, not True"),
        (10, 10, r"soft_time_limit \(10s\) must be shorter than time_limit \(10s\)"),
    ],
)
def test_bad_limits_are_refused_when_the_task_is_defined(soft, hard, message):
    with pytest.raises(GearattachError, match=message):
        task(name="tests.bad_limits", soft_time_limit=soft, time_limit=hard)(lambda: None)


def test_a_bad_default_setting_names_the_setting():
    with (
        override_settings(GEARATTACH={"TIME_LIMIT": "soon"}),
        pytest.raises(GearattachError, match=r"GEARATTACH\['TIME_LIMIT'\] must be"),
    ):
        TimeLimits().or_defaults()


def test_a_task_limit_wins_over_the_default():
    with override_settings(GEARATTACH={"TIME_LIMIT": 60, "SOFT_TIME_LIMIT": 50}):
        assert TimeLimits.of(5, None).or_defaults() == TimeLimits(5.0, 60.0)


@contextmanager
def _holding_the_job_table() -> Iterator[None]:
    """Block INSERTs into the job table (reads go on) until the block ends."""
    with transaction.atomic():
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute(f"LOCK TABLE {Job._meta.db_table} IN EXCLUSIVE MODE")
        else:  # BEGIN IMMEDIATE (the test settings' transaction mode) took the lock
            Job.objects.filter(pk=None).update(priority="normal")
        yield


def test_a_soft_limit_never_fires_once_the_body_returned(gearmand, worker, tmp_path):
    """A chain step returns well within its soft limit (1 s), then hands the next link
    over, which takes longer than that (the link's INSERT waits on a lock held here). The
    limit passes meanwhile: it must not fail the step that returned, nor leave the next
    link recorded without a job in gearmand."""
    from django_gearattach.celery import chain
    from tests.celeryapp.tasks import add, gated_step

    log, gate = tmp_path / "log", tmp_path / "gate"
    result = chain(gated_step.s(1, str(gate), str(log)), add.s(10)).apply_async()
    step = wait_for_status(gated_step.name, result.parent.id, Status.RUNNING)
    with _holding_the_job_table():
        gate.touch()
        wait_until(lambda: executions(log) == ["returned-1"], what="the step to return")
        # Past the step's soft limit, counted from its start, with a margin for the tick.
        time.sleep(max(0.0, step.started_at.timestamp() + 1.4 - time.time()))
    assert result.get(timeout=30) == 12
    assert Job.objects.get(key=result.parent.id).status == Status.COMPLETE
