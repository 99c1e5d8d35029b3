"""A job that no worker can run says so: submit(), attach() and the cached STATUS counts."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from django_gearattach import AttachTimeout, JobEvent, attach, submit
from django_gearattach import presence as presence_module
from django_gearattach.attachment import _Clock
from django_gearattach.exceptions import NoWorker, UnknownTask
from django_gearattach.gearman.connection import Connection, admin_command
from django_gearattach.gearman.protocol import Command
from django_gearattach.gearman.rendezvous import Address
from django_gearattach.models import Job
from django_gearattach.submission import asubmit
from django_gearattach.testing import wait_for_workers
from tests.helpers import wait_for_status

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def fresh_answers() -> Iterator[None]:
    presence_module.forget()
    yield
    presence_module.forget()


@contextlib.contextmanager
def foreign_worker(address: str, function: str) -> Iterator[None]:
    """A worker of another program: it registers ``function`` and runs nothing."""
    with Connection(Address.parse(address)) as conn:
        conn.send(Command.CAN_DO, function)
        wait_for_workers(address, function)
        yield


# -- submit() -----------------------------------------------------------------------------
def test_a_name_nobody_defines_or_runs_is_refused_with_a_suggestion(gearmand) -> None:
    with pytest.raises(UnknownTask) as caught:
        submit("tests.recrod", ["/tmp/x"])
    message = str(caught.value)
    assert "no task named 'tests.recrod' is defined in this process" in message
    assert f"no worker on {gearmand.address} registers it" in message
    assert "Did you mean 'tests.record'" in message  # the closest first
    assert "GEARATTACH['EXTERNAL_TASKS']" in message
    assert not Job.objects.exists()  # nothing was submitted, nothing recorded


async def test_asubmit_refuses_it_too(gearmand) -> None:
    with pytest.raises(UnknownTask, match=r"Did you mean 'tests\.add'"):
        await asubmit("tests.ad", [1, 2])
    assert not await Job.objects.aexists()


def test_a_name_that_a_worker_elsewhere_registers_is_accepted(gearmand) -> None:
    with foreign_worker(gearmand.address, "elsewhere.resize"):
        job = submit("elsewhere.resize", ["photo.jpg"])
    assert job.status == "queued"


def test_external_tasks_names_what_this_process_submits_blind(gearmand, settings) -> None:
    """For web processes that import no task modules, and workers outside the project."""
    settings.GEARATTACH = {**settings.GEARATTACH, "EXTERNAL_TASKS": ["legacy.*"]}
    assert submit("legacy.thumbnail").status == "queued"
    with pytest.raises(UnknownTask):
        submit("other.thing")


def test_a_task_this_process_defines_is_submitted_with_no_worker_running(gearmand) -> None:
    # The worker may start later (a deployment in progress): that job waits, as it should.
    assert submit("tests.add", [1, 2]).status == "queued"


def test_without_an_answering_server_submit_says_gearmand_is_down(settings) -> None:
    from django_gearattach.exceptions import SubmitFailed
    from django_gearattach.testing import free_port

    settings.GEARATTACH = {**settings.GEARATTACH, "SERVERS": [f"127.0.0.1:{free_port()}"]}
    with pytest.raises(SubmitFailed, match="is gearmand running"):
        submit("nobody.knows")


def test_status_counts_are_asked_once_per_refresh(gearmand, monkeypatch) -> None:
    asked: list[str] = []

    def counting(address, command, timeout=5.0):
        asked.append(command)
        return admin_command(address, command, timeout)

    monkeypatch.setattr("django_gearattach.presence.admin_command", counting)
    address = Address.parse(gearmand.address)
    with foreign_worker(gearmand.address, "elsewhere.resize"):
        for _ in range(50):
            assert presence_module.workers("elsewhere.resize", [address]) == 1
    assert asked == ["status"]


# -- attach() -----------------------------------------------------------------------------
def test_attach_says_no_worker_runs_the_job_and_times_out_with_no_worker(
    gearmand, worker_factory, log_path: Path
) -> None:
    job = submit("tests.record", [str(log_path)])
    seen: list[JobEvent] = []
    with pytest.raises(NoWorker) as caught:
        seen.extend(attach(job, timeout=1))
    assert [e.event for e in seen] == ["unserved"]
    where = f"no worker is running for 'tests.record' on {gearmand.address}"
    assert seen[0].message.startswith(where)
    assert seen[0].as_dict() == {"event": "unserved", "message": seen[0].message}
    assert isinstance(caught.value, AttachTimeout)  # `except AttachTimeout` still works
    assert "did not start in time" in str(caught.value)
    assert "keeps running" not in str(caught.value)  # it never started
    # A worker starts: the same job runs, and its attachers hear it.
    worker_factory([gearmand])
    wait_for_workers(gearmand.address, "tests.record")
    events = [e.event for e in attach(job, timeout=20)]
    assert events[-1] == "complete"
    assert "unserved" not in events


def test_a_queued_job_that_workers_register_times_out_as_queued_not_as_no_worker(
    gearmand, log_path: Path, tmp_path: Path
) -> None:
    job = submit("tests.record", [str(log_path)])
    with (
        foreign_worker(gearmand.address, "tests.record"),  # registered, never grabs
        pytest.raises(AttachTimeout) as caught,
    ):
        list(attach(job, timeout=0.5))
    assert not isinstance(caught.value, NoWorker)
    assert "it is still queued" in str(caught.value)


async def test_aattach_says_so_too(gearmand, log_path: Path) -> None:
    from django_gearattach import aattach
    from django_gearattach.clients import get_async_client

    job = await asubmit("tests.record", [str(log_path)])
    seen: list[str] = []

    async def follow() -> None:
        async for event in aattach(job, timeout=1):
            seen.append(event.event)

    try:
        with pytest.raises(NoWorker):
            await follow()
    finally:
        await get_async_client().close()
    assert seen == ["unserved"]


def test_the_clock_reports_changes_only() -> None:
    clock = _Clock(None)
    address = Address.parse("127.0.0.1:4730")
    assert clock.saw_workers(None, "f", address) is None  # unknown: nothing new
    unserved = clock.saw_workers(0, "f", address)
    assert unserved is not None
    assert unserved.event == "unserved"
    assert clock.saw_workers(0, "f", address) is None  # said once
    served = clock.saw_workers(2, "f", address)
    assert served is not None
    assert served.event == "served"
    assert clock.saw_workers(2, "f", address) is None


def test_a_scheduled_job_waits_for_its_time_not_for_a_worker(gearmand) -> None:
    job = submit("tests.add", [1, 2], delay=3600)
    with pytest.raises(AttachTimeout) as caught:
        list(attach(job, timeout=0.5))
    assert not isinstance(caught.value, NoWorker)
    assert "still queued" in str(caught.value)


def test_a_job_whose_workers_run_says_nothing_of_workers(gearmand, worker, log_path) -> None:
    wait_for_workers(gearmand.address, "tests.record")
    job = submit("tests.record", [str(log_path)], kwargs={"steps": 2})
    events = [e.event for e in attach(job, timeout=20)]
    assert "unserved" not in events
    assert events[-1] == "complete"
    wait_for_status("tests.record", job.key, "complete")


# -- the JSON API and the page without JavaScript ---------------------------------------
def test_a_program_and_a_page_without_javascript_hear_that_no_worker_runs(
    gearmand, client
) -> None:
    """The widget hears ``unserved`` from attach; a program polling the JSON API and a
    browser without JavaScript are told from the same cached counts."""
    json = {"Accept": "application/json"}
    accepted = client.get("/offload/sync/", {"colour": "blue"}, headers=json)
    assert accepted.status_code == 202
    said = accepted.json()
    assert said["status"] == "queued"
    assert said["waiting_for"] == "worker"
    assert said["message"].startswith("No worker is running for this job yet")
    page = client.get("/offload/sync/", {"colour": "blue"})
    assert page.status_code == 202
    assert 'class="gearattach-unserved"' in page.content.decode()
    # A worker registers the function: the next answers say nothing of workers.
    with foreign_worker(gearmand.address, "gearattach.offload"):
        presence_module.forget()
        polled = client.get(accepted["Location"], headers=json)
        assert polled.status_code == 200
        assert polled.json()["status"] == "queued"
        assert "waiting_for" not in polled.json()
        assert "message" not in polled.json()
        again = client.get("/offload/sync/", {"colour": "blue"})
        assert 'class="gearattach-unserved"' not in again.content.decode()


def test_a_job_that_is_not_queued_asks_no_server(gearmand, monkeypatch) -> None:
    job = submit("tests.record", ["/nonexistent"])
    Job.objects.filter(pk=job.pk).update(status="complete")
    asked: list[object] = []

    def workers(*args: object) -> int:
        asked.append(args)
        return 0

    monkeypatch.setattr(presence_module, "workers", workers)
    assert presence_module.unserved(Job.objects.get(pk=job.pk)) is False
    assert asked == []
    assert presence_module.unserved(job) is True  # the object still says queued
    assert asked == [("tests.record", [Address.parse(gearmand.address)])]
