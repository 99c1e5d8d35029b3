"""Rate and concurrency limits over several gearworker processes (ratelimits.py)."""

from __future__ import annotations

import pytest

from django_gearattach import submit, task
from django_gearattach.exceptions import GearattachError
from django_gearattach.models import Job, Status, Throttle
from django_gearattach.ratelimits import parse_rate
from django_gearattach.testing import wait_for_workers
from tests.conftest import executions
from tests.helpers import wait_for_status

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.mark.parametrize(
    ("text", "per_second"),
    [("10/m", 10 / 60), ("2/s", 2.0), ("360/h", 0.1), ("5", 5.0), (5, 5.0), ("1.5/s", 1.5)],
)
def test_celery_rate_syntax(text, per_second):
    assert parse_rate(text) == pytest.approx(per_second)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("ten/m", "rate_limit must be a number of starts per s, m or h"),
        ("10/d", "rate_limit must be a number of starts per s, m or h"),
        ("0/s", "rate_limit must be above zero"),
        (True, "rate_limit must be like '10/m'"),
        ([10], "rate_limit must be like '10/m'"),
    ],
)
def test_bad_rates_are_refused_when_the_task_is_defined(value, message):
    with pytest.raises(GearattachError, match=message):
        task(name="tests.bad_rate", rate_limit=value)(lambda: None)


@pytest.mark.parametrize("value", [0, -1, 1.5, "2", True])
def test_bad_concurrency_is_refused(value):
    with pytest.raises(GearattachError, match="concurrency must be a whole number"):
        task(name="tests.bad_concurrency", concurrency=value)(lambda: None)


def test_concurrency_holds_over_all_worker_processes_while_others_flow(
    gearmand, worker_factory, log_path
):
    worker_factory([gearmand], "--concurrency", "2")
    worker_factory([gearmand], "--concurrency", "2")
    wait_for_workers(gearmand.address, "tests.add", 4)
    jobs = [submit("tests.paired", [str(log_path)]) for _ in range(8)]
    # Four processes, two busy at most with tests.paired: other work goes on meanwhile.
    other = submit("tests.add", [20, 22])
    assert wait_for_status("tests.add", other.key, Status.COMPLETE).result == 42
    for job in jobs:
        wait_for_status("tests.paired", job.key, Status.COMPLETE)
    running, most = 0, 0
    for line in executions(log_path):  # the order in which starts and ends happened
        running += 1 if line.startswith("start-") else -1
        most = max(most, running)
    assert most <= 2
    # Each ran once (a CANT_DO sent while a job runs would make gearmand requeue it).
    assert len(executions(log_path)) == 16
    assert [r.attempts for r in Job.objects.filter(function="tests.paired")] == [1] * 8
    # Every slot was given back or is held by a live process for its next job.
    assert Throttle.objects.filter(function="tests.paired").count() == 2


def test_a_rate_limit_spaces_the_starts_over_all_worker_processes(
    gearmand, worker_factory, log_path
):
    worker_factory([gearmand], "--concurrency", "2")
    wait_for_workers(gearmand.address, "tests.add", 2)
    jobs = [submit("tests.metered", [str(log_path)]) for _ in range(11)]
    for job in jobs:
        wait_for_status("tests.metered", job.key, Status.COMPLETE)
    starts = sorted(float(line) for line in executions(log_path))
    assert len(starts) == 11  # each ran once
    assert [r.attempts for r in Job.objects.filter(function="tests.metered")] == [1] * 11
    # A lower bound only (a slow machine can only spread starts further): 5/s means
    # 11 starts span at least (11 - 1 - 2) * 0.2 s, allowing one early start per
    # process that held a right before the jobs came.
    assert starts[-1] - starts[0] >= (len(starts) - 1 - 2) * 0.2 - 0.01


def test_gearmand_requeues_a_running_job_whose_worker_sends_cant_do(gearmand, settings):
    """Why a worker sends CANT_DO only after it reported the job (gearmand 1.1.20)."""
    from django_gearattach.gearman.rendezvous import Address
    from django_gearattach.gearman.worker import WorkerPool

    address = Address.parse(gearmand.address)
    # Its workers are the raw pools below, which register once the job is queued.
    settings.GEARATTACH = {**settings.GEARATTACH, "EXTERNAL_TASKS": ["tests.probe_cant_do"]}
    submit("tests.probe_cant_do", key="probe-1")
    first = WorkerPool([address], ["tests.probe_cant_do"], 5)
    second = WorkerPool([address], ["tests.probe_cant_do"], 5)
    try:
        held = first.grab(0.5)
        assert held is not None
        assert held.unique == b"probe-1"
        first.can_do("tests.probe_cant_do", False)
        again = second.grab(5)  # the same job, handed out a second time
        assert again is not None
        assert again.unique == b"probe-1"
    finally:
        first.close()
        second.close()
