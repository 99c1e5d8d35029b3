"""The recovery sweep against real gearmand: what gearmand lost is resubmitted, once."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import threading
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.db import connection
from django.utils import timezone

from django_gearattach import submit
from django_gearattach.clients import get_client
from django_gearattach.gearman.rendezvous import Address
from django_gearattach.models import Job, Status
from django_gearattach.worker.recovery import Sweeper
from django_gearattach.worker.sweeplock import SweepLock
from tests.conftest import ROOT, executions
from tests.helpers import key_homed_on, wait_for_status, wait_until

pytestmark = pytest.mark.django_db(transaction=True)


def _keys(actions):
    return [action.record.key for action in actions]


def test_a_sweep_resubmits_a_lost_job_only_after_the_grace_period(gearmand, settings, log_path):
    settings.GEARATTACH = {**settings.GEARATTACH, "RECOVERY_GRACE": 0.2}
    lost = submit("tests.record", [str(log_path)])
    kept = submit("tests.record", [str(log_path)])
    Job.objects.create(function="tests.record", key="done", status=Status.COMPLETE)
    gearmand.restart()  # no persistent queue: both jobs are gone from gearmand
    address = Address.parse(gearmand.address)
    get_client().submit_background(address, "tests.record", kept.key.encode(), b"{}")
    sweeper = Sweeper(batch=1)  # one record per pass: the cursor must visit each in turn
    assert [sweeper.sweep() for _ in range(3)] == [[], [], []]  # suspected, not yet resubmitted
    threading.Event().wait(0.25)
    revived = [key for _ in range(3) for key in _keys(sweeper.sweep())]
    assert revived == [lost.key]
    assert get_client().status_unique(address, lost.key.encode()).known
    assert sweeper.sweep() == []  # it is in gearmand again
    record = Job.objects.get(pk=lost.pk)
    assert (record.status, record.recoveries, record.server) == ("queued", 1, gearmand.address)


def test_workers_sweep_a_restarted_gearmand_and_run_what_it_lost(
    gearmand, worker_factory, log_path, monkeypatch
):
    jobs = [submit("tests.record", [str(log_path)]) for _ in range(5)]
    gearmand.restart()
    monkeypatch.setenv("GEARATTACH_RECOVERY_INTERVAL", "0.2")
    monkeypatch.setenv("GEARATTACH_RECOVERY_GRACE", "0.3")
    worker_factory([gearmand])
    for job in jobs:  # nobody attaches
        wait_for_status("tests.record", job.key, Status.COMPLETE)
    assert len(executions(log_path)) == 5


def test_gearmand_killed_holding_200_queued_jobs_loses_none(
    gearmand, worker_factory, log_path, monkeypatch
):
    """SIGKILL, no persistent queue, restarted on the same port: every job completes, each
    once, resubmitted by the first sweep that sees it gone, and nobody attaches."""
    jobs = [submit("tests.record", [str(log_path)]) for _ in range(200)]
    assert get_client().status_unique(Address.parse(gearmand.address), jobs[0].key.encode()).known
    gearmand.stop(signal.SIGKILL)
    gearmand.start()  # the same port, an empty queue
    monkeypatch.setenv("GEARATTACH_RECOVERY_INTERVAL", "0.5")
    monkeypatch.setenv("GEARATTACH_RECOVERY_GRACE", "0.5")
    worker_factory([gearmand])
    worker_factory([gearmand])
    wait_until(
        lambda: Job.objects.filter(status=Status.COMPLETE).count() == 200,
        timeout=90,
        what="all 200 jobs to complete",
    )
    assert sorted(executions(log_path)) == sorted(
        j.result["done"] for j in Job.objects.filter(status=Status.COMPLETE)
    )
    assert len(executions(log_path)) == 200  # each ran once
    # One sweep (one leader; both workers sweep only while they hold the lock) found them.
    assert set(Job.objects.values_list("recoveries", "attempts")) == {(1, 1)}


def test_a_scheduled_job_is_resubmitted_for_its_original_time(gearmand, settings, log_path):
    settings.GEARATTACH = {**settings.GEARATTACH, "RECOVERY_GRACE": 0}
    run_at = timezone.now() + timedelta(hours=1)
    job = submit("tests.record", [str(log_path)], run_at=run_at)
    gearmand.restart()
    address = Address.parse(gearmand.address)
    assert not get_client().status_unique(address, job.key.encode()).known
    (action,) = Sweeper().sweep()
    assert action.epoch == math.ceil(run_at.timestamp())
    assert "scheduled" in str(action)
    assert run_at.isoformat() in str(action)
    status = get_client().status_unique(address, job.key.encode())
    assert status.known
    assert not status.running
    assert Job.objects.get(pk=job.pk).status == Status.SCHEDULED


def test_a_job_resubmitted_max_attempts_times_is_marked_lost(gearmand, settings, log_path):
    settings.GEARATTACH = {**settings.GEARATTACH, "RECOVERY_GRACE": 0}
    again = submit("tests.record", [str(log_path)])
    given_up = submit("tests.record", [str(log_path)])
    died = submit("tests.record", [str(log_path)])
    Job.objects.filter(pk=given_up.pk).update(recoveries=3)
    Job.objects.filter(pk=died.pk).update(status=Status.RUNNING, attempts=3)
    gearmand.restart()
    actions = {a.record.key: a for a in Sweeper().sweep()}
    assert {k: a.kind for k, a in actions.items()} == {
        again.key: "resubmitted",
        given_up.key: "lost",
        died.key: "lost",
    }
    for job in (given_up, died):
        record = Job.objects.get(pk=job.pk)
        assert record.status == Status.LOST
        assert "MAX_ATTEMPTS" in record.error
    assert Job.objects.get(pk=again.pk).recoveries == 1


def test_a_running_job_with_a_live_claim_is_left_alone_and_an_expired_one_is_resubmitted(
    gearmand, settings, log_path
):
    settings.GEARATTACH = {**settings.GEARATTACH, "RECOVERY_GRACE": 0}
    live = submit("tests.record", [str(log_path)])
    expired = submit("tests.record", [str(log_path)])
    now = timezone.now()
    Job.objects.filter(pk=live.pk).update(
        status=Status.RUNNING, attempts=1, execution="a" * 32, lease_until=now + timedelta(60)
    )
    Job.objects.filter(pk=expired.pk).update(
        status=Status.RUNNING, attempts=1, execution="b" * 32, lease_until=now - timedelta(1)
    )
    gearmand.restart()
    assert _keys(Sweeper().sweep()) == [expired.key]
    record = Job.objects.get(pk=expired.pk)
    assert (record.status, record.recoveries, record.lease_until) == ("queued", 1, None)
    assert Job.objects.get(pk=live.pk).status == Status.RUNNING


def test_a_job_known_to_another_server_is_not_resubmitted(gearmand_factory, settings, log_path):
    home, other = gearmand_factory(), gearmand_factory()
    settings.GEARATTACH = {
        **settings.GEARATTACH,
        "SERVERS": [home.address, other.address],
        "RECOVERY_GRACE": 0,
    }
    job = submit("tests.record", [str(log_path)], key=key_homed_on(home.address))
    assert job.server == home.address
    get_client().submit_background(  # an attacher revived it on the other server
        Address.parse(other.address), "tests.record", job.key.encode(), b"{}"
    )
    home.restart()
    assert Sweeper().sweep() == []


def test_a_home_server_that_does_not_answer_sends_the_job_to_the_next(
    gearmand_factory, settings, log_path
):
    home, other = gearmand_factory(), gearmand_factory()
    settings.GEARATTACH = {
        **settings.GEARATTACH,
        "SERVERS": [home.address, other.address],
        "RECOVERY_GRACE": 0,
        "TIMEOUT": 1.0,
    }
    key = key_homed_on(home.address)
    job = submit("tests.record", [str(log_path)], key=key)
    assert job.server == home.address
    home.stop()
    sweeper = Sweeper()
    (action,) = sweeper.sweep()
    assert str(action.address) == other.address
    assert sweeper.unreachable == {Address.parse(home.address)}
    assert get_client().status_unique(Address.parse(other.address), job.key.encode()).known
    assert Job.objects.get(pk=job.pk).server == other.address


def test_recover_command_dry_run_then_real(gearmand, settings, log_path, capsys):
    settings.GEARATTACH = {**settings.GEARATTACH, "RECOVERY_GRACE": 0}
    job = submit("tests.record", [str(log_path)])
    submit("tests.record", [str(log_path)], key="still-there")
    gearmand.restart()
    get_client().submit_background(
        Address.parse(gearmand.address), "tests.record", b"still-there", b"{}"
    )
    call_command("gearattach", "recover", "--dry-run", "--grace", "0.1")
    out = capsys.readouterr().out
    assert "1 job(s) unknown to gearmand; checking again in 0.1s" in out
    assert f"tests.record[{job.key}] (queued) would be resubmitted to {gearmand.address}" in out
    assert "Checked 2 active records: 1 would be resubmitted, 0 would be marked lost." in out
    assert Job.objects.get(pk=job.pk).recoveries == 0
    call_command("gearattach", "recover", "--grace", "0")
    out = capsys.readouterr().out
    assert f"tests.record[{job.key}] (queued) resubmitted to {gearmand.address}" in out
    assert "Checked 2 active records: 1 resubmitted, 0 marked lost." in out
    assert get_client().status_unique(Address.parse(gearmand.address), job.key.encode()).known


def test_one_sweep_at_a_time_across_processes(gearmand):
    """A sweep running elsewhere (here: this process holds the lock) keeps
    ``gearattach recover`` from sweeping at the same time."""
    lock = SweepLock("recovery")
    assert lock.acquire()
    try:
        env = {
            **os.environ,
            "GEARATTACH_TEST_DATABASE": str(connection.settings_dict["NAME"]),
            "GEARATTACH_SERVERS": gearmand.address,
        }
        done = subprocess.run(
            [sys.executable, "-m", "django", "gearattach", "recover", "--wait", "0.3"],
            env={**env, "DJANGO_SETTINGS_MODULE": "tests.settings"},
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        lock.release()
    assert done.returncode == 1, done.stdout + done.stderr
    assert "another recovery sweep is running" in done.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--grace", "-1"], "must be zero or more seconds"),
        (["--grace", "soon"], "'soon' is not a number of seconds"),
        (["--wait", "inf"], "must be zero or more seconds"),
    ],
)
def test_recover_command_refuses_bad_input(args, message):
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match=message):
        call_command("gearattach", "recover", *args)


def _sweep_led() -> bool:
    """Whether a process leads the sweep (this one tries the lock, and lets it go)."""
    lock = SweepLock("recovery-leader")
    if lock.acquire():
        lock.release()
        return False
    return True


def test_recovery_does_not_wait_for_the_sweep_leaders_long_job(
    gearmand, worker_factory, log_path, tmp_path, monkeypatch
):
    """The worker that leads the sweep runs a long job (here until a gate opens; an
    hour-long job in production), and another worker is idle: a job that a dead
    submitter left recorded but never sent is recovered meanwhile, not after it."""
    monkeypatch.setenv("GEARATTACH_RECOVERY_INTERVAL", "0.3")
    monkeypatch.setenv("GEARATTACH_RECOVERY_GRACE", "0.3")
    gate = tmp_path / "gate"
    worker_factory([gearmand])
    wait_until(_sweep_led, what="the first worker to lead the sweep")
    busy = submit("tests.record", [str(log_path)], {"gate": str(gate)})
    wait_for_status("tests.record", busy.key, Status.RUNNING)
    worker_factory([gearmand])
    # Its submitter died between inserting the record and reaching gearmand.
    lost = Job.objects.create(
        function="tests.add", key="submitter-died", arguments={"args": [2, 3], "kwargs": {}}
    )
    assert wait_for_status("tests.add", lost.key, Status.COMPLETE, timeout=15).result == 5
    assert Job.objects.get(pk=busy.pk).status == Status.RUNNING  # the long job still runs
    gate.touch()
    wait_for_status("tests.record", busy.key, Status.COMPLETE)
