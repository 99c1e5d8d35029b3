"""Scheduled jobs: SUBMIT_JOB_EPOCH on the real gearmand, submit(run_at=/delay=), attach."""

from __future__ import annotations

import time
from datetime import datetime, timedelta

import pytest
from django.utils import timezone

from django_gearattach import asubmit, attach, submit
from django_gearattach.clients import get_client
from django_gearattach.exceptions import InvalidSchedule
from django_gearattach.gearman.client import Client
from django_gearattach.gearman.protocol import Command
from django_gearattach.gearman.rendezvous import Address
from django_gearattach.gearman.worker import WorkerPool
from django_gearattach.models import Job, Status
from django_gearattach.operations import Cancel, cancel
from tests.dbthreads import closes_thread_connections  # noqa: F401
from tests.helpers import wait_for_status

pytestmark = pytest.mark.django_db(transaction=True)


def _grab(pool: WorkerPool, seconds: float) -> tuple[bytes, float] | None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        job = pool.grab(wait=0.1)
        if job is not None:
            job.send(Command.WORK_COMPLETE, b"")
            return job.unique, time.time()
    return None


def test_gearmand_holds_an_epoch_job_until_its_time(gearmand):
    """What the design relies on, checked on the real server (GEARMAN_FACTS.md)."""
    address, client = Address.parse(gearmand.address), Client()
    now = time.time()
    due = int(now) + 2
    handle = client.submit_epoch(address, "f", b"later", due, b"{}")
    # While it waits: known, not running; a background submit of the same unique joins it.
    status = client.status_unique(address, b"later")
    assert (status.known, status.running) == (True, False)
    assert client.submit_background(address, "f", b"later", b"other") == handle
    client.submit_epoch(address, "f", b"past", int(now) - 60, b"{}")
    pool = WorkerPool([address], {"f": None}, timeout=5)
    try:
        first = _grab(pool, 1.0)
        assert first is not None
        assert first[0] == b"past"  # a time already passed runs at once
        assert _grab(pool, due - time.time() - 0.3) is None  # nothing before its time
        second = _grab(pool, 5)
        assert second is not None
        assert second[0] == b"later"
        assert second[1] >= due
    finally:
        pool.close()


def test_submit_with_a_delay_runs_after_it_and_attach_follows(gearmand, worker):
    before = timezone.now()
    job = submit("tests.add", [2, 3], delay=1.5, key="sched-1")
    assert job.status == Status.SCHEDULED
    assert job.scheduled_for is not None
    assert before + timedelta(seconds=1.5) <= job.scheduled_for <= timezone.now() + timedelta(2)
    # A second submit of the key joins the scheduled job; attach watches it, never drops it.
    assert submit("tests.add", [9, 9], key="sched-1").pk == job.pk
    events = [e.as_dict() for e in attach(job, timeout=20)]
    assert events[-1] == {"event": "complete", "result": 5}
    job.refresh_from_db()
    assert job.status == Status.COMPLETE
    assert job.started_at is not None
    assert job.started_at >= job.scheduled_for.replace(microsecond=0)


@pytest.mark.usefixtures("closes_thread_connections")
async def test_asubmit_schedules_and_a_scheduled_job_can_be_cancelled(gearmand):
    from asgiref.sync import sync_to_async

    run_at = timezone.now() + timedelta(hours=1)
    job = await asubmit("tests.add", [1, 1], run_at=run_at)
    assert (job.status, job.scheduled_for) == (Status.SCHEDULED, run_at)
    status = get_client().status_unique(Address.parse(gearmand.address), job.key.encode())
    assert (status.known, status.running) == (True, False)
    outcome = await sync_to_async(cancel)(job)
    assert outcome.verdict is Cancel.CANCELLED
    assert (await Job.objects.aget(pk=job.pk)).status == Status.CANCELLED


def test_a_time_in_the_past_runs_now(gearmand, worker):
    past = timezone.now() - timedelta(minutes=5)
    job = submit("tests.add", [1, 2], run_at=past)
    assert (job.status, job.scheduled_for) == (Status.QUEUED, past)
    assert wait_for_status("tests.add", job.key, Status.COMPLETE).result == 3


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"run_at": datetime(2030, 1, 1, 9, 0)}, "naive datetime"),
        ({"delay": -1}, "zero or more seconds"),
        ({"delay": float("nan")}, "zero or more seconds"),
        ({"delay": "10"}, "number of seconds or a timedelta"),
        ({"delay": 1, "run_at": timezone.now()}, "not both"),
        ({"run_at": "2030-01-01"}, "must be a datetime"),
    ],
)
def test_bad_schedules_are_clear_errors_and_record_nothing(options, message, gearmand):
    with pytest.raises(InvalidSchedule, match=message):
        submit("tests.add", [1, 2], **options)
    assert not Job.objects.exists()


def test_attach_revives_a_forgotten_scheduled_job_at_its_time_not_before(gearmand, worker):
    """A scheduled record that gearmand no longer holds (a restart without a persistent
    queue) is treated like a queued one: the attacher's marker revives it, and the
    worker that gets the marker before the record's time puts it back for that time."""
    due = timezone.now() + timedelta(seconds=2)
    job = Job.objects.create(
        function="tests.add",
        key="sched-lost",
        status=Status.SCHEDULED,
        scheduled_for=due,
        arguments={"args": [20, 22], "kwargs": {}},
        server=gearmand.address,
    )
    events = [e.as_dict() for e in attach("tests.add", "sched-lost", timeout=20)]
    assert events[-1] == {"event": "complete", "result": 42}
    job.refresh_from_db()
    assert job.started_at is not None
    assert job.started_at >= due.replace(microsecond=0)
