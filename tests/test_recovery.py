"""The recovery sweep against real gearmand: what gearmand lost is resubmitted, once."""

from __future__ import annotations

import threading

import pytest

from django_gearattach import submit
from django_gearattach.clients import get_client
from django_gearattach.gearman.routing import Address
from django_gearattach.models import Job, Status
from django_gearattach.recovery import Sweeper

from .conftest import executions
from .helpers import wait_for_status

pytestmark = pytest.mark.django_db(transaction=True)


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
    revived = [job.key for _ in range(3) for job in sweeper.sweep()]
    assert revived == [lost.key]
    assert get_client().status_unique(address, lost.key.encode()).known
    assert sweeper.sweep() == []  # it is in gearmand again


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
