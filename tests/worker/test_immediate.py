"""Immediate mode: tasks run inside ``submit`` with the records, signals and errors of a worker."""

from __future__ import annotations

import os
import socket

import pytest

from django_gearattach import JobNotFound, UnknownTask, aattach, asubmit, attach, submit
from django_gearattach.models import Job, Status
from django_gearattach.testing import free_port
from tests.conftest import executions
from tests.dbthreads import closes_thread_connections  # noqa: F401
from tests.helpers import wait_for_status
from tests.testapp.tasks import add


@pytest.fixture
def immediate(settings):
    # A port nobody listens on: any attempt to reach gearmand would fail loudly.
    settings.GEARATTACH = {
        **settings.GEARATTACH,
        "IMMEDIATE": True,
        "SERVERS": [f"127.0.0.1:{free_port()}"],
    }


@pytest.fixture
def no_network(monkeypatch):
    """Fail the test if anything opens a TCP connection."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"immediate mode opened a connection to {args[0]!r}")

    monkeypatch.setattr(socket, "create_connection", refuse)


pytestmark = pytest.mark.usefixtures("immediate")
offline = pytest.mark.usefixtures("no_network")


@offline
@pytest.mark.django_db
def test_submit_runs_the_task_before_returning():
    job = add.submit(2, 3)
    assert job.status == Status.COMPLETE
    assert job.result == 5
    record = Job.objects.get(pk=job.pk)
    assert (record.status, record.result, record.attempts) == (Status.COMPLETE, 5, 1)
    assert record.worker_pid == os.getpid()
    assert record.server == "immediate"
    assert record.started_at is not None
    assert record.finished_at >= record.started_at


@offline
@pytest.mark.django_db
def test_progress_and_data_reach_the_record(log_path):
    job = submit("tests.record", [str(log_path)], {"steps": 4})
    assert (job.progress_numerator, job.progress_denominator) == (4, 4)
    assert job.result["done"].startswith(f"{os.getpid()}-")
    assert len(executions(log_path)) == 1


@offline
@pytest.mark.django_db
def test_a_failing_task_fails_its_record_and_submit_returns_it():
    job = submit("tests.fail", ["kaput"])
    assert job.status == Status.FAILED
    assert job.error == "ValueError: kaput"
    assert "raise ValueError(message)" in job.traceback
    assert job.traceback.rstrip().endswith("ValueError: kaput")


@offline
@pytest.mark.django_db
def test_a_result_that_is_not_json_fails_like_on_a_worker():
    job = submit("tests.unserialisable")
    assert job.status == Status.FAILED
    assert job.error.startswith("BadPayload: value is not JSON serialisable")


@offline
@pytest.mark.django_db
def test_attach_answers_from_the_record_without_gearmand():
    job = add.submit(20, 22)
    assert [e.as_dict() for e in attach(job)] == [{"event": "complete", "result": 42}]
    assert [e.as_dict() for e in attach("tests.add", job.key)] == [
        {"event": "complete", "result": 42}
    ]


@offline
@pytest.mark.django_db
def test_attach_to_an_unknown_key_is_job_not_found():
    with pytest.raises(JobNotFound):
        list(attach("tests.add", "never-submitted"))
    assert not Job.objects.exists()


@offline
@pytest.mark.django_db
def test_a_finished_key_is_not_run_again(log_path):
    first = submit("tests.record", [str(log_path)], key="once")
    again = submit("tests.record", [str(log_path)], key="once")
    assert again.pk == first.pk
    assert again.result == first.result
    assert len(executions(log_path)) == 1
    rerun = submit("tests.record", [str(log_path)], key="once", rerun=True)
    assert rerun.result != first.result
    assert len(executions(log_path)) == 2


@offline
@pytest.mark.django_db
def test_an_unknown_task_fails_the_record_and_raises():
    with pytest.raises(UnknownTask, match=r"no task is registered as 'tests\.nope'"):
        submit("tests.nope", key="k")
    record = Job.objects.get(key="k")
    assert record.status == Status.FAILED
    assert record.error.startswith("UnknownTask: ")


@offline
@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("closes_thread_connections")
async def test_asubmit_and_aattach():
    job = await asubmit("tests.add", [1, 2])
    assert (job.status, job.result) == (Status.COMPLETE, 3)
    assert [e.as_dict() async for e in aattach(job)] == [{"event": "complete", "result": 3}]


@offline
@pytest.mark.django_db(transaction=True)
def test_an_async_def_task_runs_to_its_end_in_the_submitting_thread():
    job = submit("tests.async_chatty")
    assert (job.status, job.result) == (Status.COMPLETE, {"answer": 42})
    assert (job.progress_numerator, job.data) == (2, {"partial": "half"})
    failed = submit("tests.async_fail", ["nope"])
    assert (failed.status, failed.error) == (Status.FAILED, "ValueError: nope")


# -- the same record as a real worker's ---------------------------------------------------

COMPARED = ["status", "result", "error", "progress_numerator", "progress_denominator", "data"]


def _snapshot(job: Job) -> dict[str, object]:
    record = Job.objects.get(pk=job.pk)
    out = {name: getattr(record, name) for name in COMPARED}
    out["attempts"] = record.attempts
    out["last traceback line"] = record.traceback.strip().splitlines()[-1:]
    out["timeline"] = (record.started_at is not None, record.finished_at is not None)
    return out


@pytest.mark.parametrize(
    ("function", "args"),
    [("tests.add", [1, 2]), ("tests.fail", ["nope"]), ("tests.unserialisable", [])],
)
@pytest.mark.django_db(transaction=True)
def test_the_record_matches_a_real_workers(function, args, settings, gearmand, worker):
    settings.GEARATTACH = {**settings.GEARATTACH, "IMMEDIATE": False}
    real_job = submit(function, args)
    expected = "complete" if function == "tests.add" else "failed"
    wait_for_status(function, real_job.key, expected)

    settings.GEARATTACH = {**settings.GEARATTACH, "IMMEDIATE": True}
    gearmand.stop()  # immediate mode must not need it
    immediate_job = submit(function, args)
    assert _snapshot(immediate_job) == _snapshot(real_job)


@offline
@pytest.mark.django_db
def test_submits_start_no_threads_and_leave_no_memory_behind():
    """Immediate mode runs in users' test suites, thousands of submits a run: a submit
    must leave no thread behind (no lease keeper, no watchdog), and memory must not grow
    with the number of submits (Django's and sqlite3's caches fill, then stay)."""
    import gc
    import threading
    import tracemalloc

    def submits(count: int) -> None:
        for n in range(count):
            add.submit(n, 2)
        gc.collect()

    submits(300)  # warm up: compiled statements, imports, bounded caches
    threads = threading.active_count()
    tracemalloc.start()
    try:
        sizes = []
        for _ in range(6):
            submits(300)
            sizes.append(tracemalloc.get_traced_memory()[0])
    finally:
        tracemalloc.stop()
    assert threading.active_count() == threads
    # sqlite3 and Django trim their caches in cycles (tens of KB up and down every few
    # hundred submits): compare the peaks of the first 900 submits and the next 900.
    growth = max(sizes[3:]) - max(sizes[:3])
    assert growth < 300 * 64, f"{growth} more bytes kept after 900 more submits ({sizes})"
