"""Signals: submitted in the submitting process, started/progress/finished where the task runs.

The worker signals are observed with a worker running in a thread of this process
(a real :class:`~django_gearattach.worker.loop.Worker` on a real gearmand), since a
receiver connected here cannot see a ``gearworker`` subprocess.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from django.dispatch import Signal

import tests.testapp.tasks  # noqa: F401  (registers the tasks the thread worker runs)
from django_gearattach import asubmit, submit
from django_gearattach.conf import conf
from django_gearattach.models import Job, Status
from django_gearattach.signals import job_finished, job_progress, job_started, job_submitted
from django_gearattach.tasks import get_task
from django_gearattach.worker.loop import Worker
from tests.dbthreads import closes_thread_connections  # noqa: F401
from tests.helpers import wait_for_status

from . import helpers

pytestmark = pytest.mark.django_db(transaction=True)

ALL = {
    "submitted": job_submitted,
    "started": job_started,
    "progress": job_progress,
    "finished": job_finished,
}


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def receiver(self, name: str):
        def receive(sender: Any, job: Job, signal: Signal, **kwargs: Any) -> None:
            assert sender is Job
            assert signal is ALL[name]
            self.calls.append(
                (
                    name,
                    {
                        "key": job.key,
                        "status": job.status,
                        "attempts": job.attempts,
                        "result": job.result,
                        "error": job.error,
                        **kwargs,
                    },
                )
            )

        return receive

    def names(self) -> list[str]:
        return [name for name, _ in self.calls]


@pytest.fixture
def recorded() -> Iterator[Recorder]:
    recorder = Recorder()
    receivers = {name: recorder.receiver(name) for name in ALL}
    for name, signal in ALL.items():
        signal.connect(receivers[name], weak=False)
    yield recorder
    for name, signal in ALL.items():
        signal.disconnect(receivers[name])


def worker_signals(recorder: Recorder) -> list[str]:
    return [name for name in recorder.names() if name != "submitted"]


@contextmanager
def thread_worker(*functions: str, jobs: int = 1) -> Iterator[None]:
    with helpers.thread_worker(Worker([get_task(f) for f in functions], conf.SERVERS), jobs):
        yield


def last_call(recorded: Any, name: str) -> dict[str, Any]:
    # job_submitted may arrive after the worker's signals: find the one asked for.
    return next(call for signal, call in reversed(recorded.calls) if signal == name)


def test_submit_sends_job_submitted_once_per_new_job(gearmand, recorded):
    job = submit("tests.add", [1, 2], key="k1")
    assert recorded.calls == [
        (
            "submitted",
            {"key": "k1", "status": "queued", "attempts": 0, "result": None, "error": ""},
        )
    ]
    submit("tests.add", [1, 2], key="k1")  # joins the queued job: nothing new was submitted
    assert recorded.names() == ["submitted"]
    assert job.key == "k1"


@pytest.mark.usefixtures("closes_thread_connections")
async def test_asubmit_sends_job_submitted(gearmand, recorded):
    job = await asubmit("tests.add", [1, 2])
    assert recorded.calls[0][0] == "submitted"
    assert recorded.calls[0][1]["key"] == job.key


def test_a_job_that_runs_sends_started_progress_and_finished(gearmand, recorded, log_path):
    with thread_worker("tests.record"):
        job = submit("tests.record", [str(log_path)], {"steps": 3})
        wait_for_status("tests.record", job.key, Status.COMPLETE)
    # job_submitted is sent once gearmand has accepted the job, which may be after the
    # worker thread started it: only the worker's own signals have an order.
    assert recorded.names().count("submitted") == 1
    assert worker_signals(recorded) == ["started", "progress", "progress", "progress", "finished"]
    started = next(c for n, c in recorded.calls if n == "started")
    assert (started["status"], started["attempts"]) == ("running", 1)
    progress = [(c["numerator"], c["denominator"]) for n, c in recorded.calls if n == "progress"]
    assert progress == [(1, 3), (2, 3), (3, 3)]
    finished = last_call(recorded, "finished")
    assert finished["status"] == "complete"
    assert finished["result"]["done"] == Job.objects.get(pk=job.pk).result["done"]


def test_a_failing_job_sends_finished_with_the_error(gearmand, recorded):
    with thread_worker("tests.fail"):
        job = submit("tests.fail", ["broken"])
        wait_for_status("tests.fail", job.key, Status.FAILED)
    assert recorded.names().count("submitted") == 1
    assert worker_signals(recorded) == ["started", "finished"]
    assert last_call(recorded, "finished")["error"] == "ValueError: broken"


def test_a_failing_receiver_is_logged_and_the_job_completes(gearmand, caplog):
    def broken(sender: Any, job: Job, **kwargs: Any) -> None:
        raise RuntimeError("receiver bug")

    for signal in (job_started, job_finished):
        signal.connect(broken)
    try:
        with thread_worker("tests.add"):
            job = submit("tests.add", [2, 2])
            record = wait_for_status("tests.add", job.key, Status.COMPLETE)
    finally:
        for signal in (job_started, job_finished):
            signal.disconnect(broken)
    assert record.result == 4
    failures = [r for r in caplog.records if r.name == "django_gearattach.signals"]
    assert len(failures) == 2
    assert all("receiver bug" in str(r.exc_info[1]) for r in failures)


@pytest.mark.parametrize("signal", [job_submitted, job_started, job_finished])
def test_signals_cost_no_query_without_receivers_and_one_with(
    signal: Signal, settings, django_assert_num_queries
):
    """Immediate mode runs the worker's code path in this thread, where queries are counted."""
    settings.GEARATTACH = {**settings.GEARATTACH, "IMMEDIATE": True}
    # insert, mark running, record the outcome, re-read the record for the caller
    with django_assert_num_queries(4):
        submit("tests.add", [1, 1])
    calls = []
    signal.connect(receiver := lambda sender, job, **kw: calls.append(job.status))
    try:
        reads = 0 if signal is job_submitted else 1
        with django_assert_num_queries(4 + reads):
            submit("tests.add", [1, 1])
    finally:
        signal.disconnect(receiver)
    assert len(calls) == 1


def test_progress_reads_the_record_once_per_job(settings, django_assert_num_queries, log_path):
    settings.GEARATTACH = {**settings.GEARATTACH, "IMMEDIATE": True, "PROGRESS_WRITE_INTERVAL": 60}
    seen = []
    job_progress.connect(receiver := lambda sender, job, **kw: seen.append(kw["numerator"]))
    try:
        # insert, running, ONE read for the five signals, the outcome (with the progress,
        # throttled from the start), the re-read for the caller
        with django_assert_num_queries(5):
            submit("tests.record", [str(log_path)], {"steps": 5})
    finally:
        job_progress.disconnect(receiver)
    assert seen == [1, 2, 3, 4, 5]
