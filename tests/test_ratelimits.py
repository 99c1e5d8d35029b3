"""Rate and concurrency limits over several gearworker processes (ratelimits.py)."""

from __future__ import annotations

import os
import time

import pytest

from django_gearattach import submit, task
from django_gearattach.exceptions import GearattachError
from django_gearattach.models import Job, Status, Throttle
from django_gearattach.ratelimits import parse_rate
from django_gearattach.testing import wait_for_workers
from tests.conftest import executions
from tests.helpers import wait_for_status, wait_until

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


def _holds_slot(function: str, pid: int) -> bool:
    return Throttle.objects.filter(function=function, holder__endswith=f":{pid}").exists()


def _most_at_once(lines: list[str]) -> int:
    events = sorted((float(line.split()[1]), line.split()[0]) for line in lines)
    running = most = 0
    for _, kind in events:
        running += 1 if kind == "start" else -1
        most = max(most, running)
    return most


@pytest.mark.postgres_only
def test_a_worker_that_lost_its_slot_while_cut_off_stops_taking_the_jobs(
    gearmand, worker_factory, database_proxy, log_path, monkeypatch
):
    """Row 5: a process holding the one ``concurrency=1`` slot loses its database; its
    lease runs out and another process takes the slot. When the database comes back,
    the first must notice (its renewal matches no row) and stop asking for the jobs."""
    monkeypatch.setenv("GEARATTACH_LEASE", "2")
    url = database_proxy.url(os.environ["DATABASE_URL"])
    cut_off = worker_factory(
        [gearmand], "--function", "tests.solo", extra_env={"DATABASE_URL": url}
    )
    wait_until(lambda: _holds_slot("tests.solo", cut_off.pid), what="the first to hold the slot")
    database_proxy.cut()
    # Its lease runs out while it cannot renew it (the clock moved on, as it would).
    Throttle.objects.filter(function="tests.solo").update(until=time.time() - 1)
    other = worker_factory([gearmand], "--function", "tests.solo")
    wait_until(lambda: _holds_slot("tests.solo", other.pid), what="the other to take the slot")
    database_proxy.heal()
    jobs = [submit("tests.solo", [str(log_path), 1.0]) for _ in range(2)]
    for job in jobs:
        wait_for_status("tests.solo", job.key, Status.COMPLETE, timeout=30)
    assert _most_at_once(executions_lines(log_path)) == 1
    assert "lost its concurrency slot" in cut_off.output()


@pytest.mark.postgres_only
def test_a_limited_worker_reconnects_after_a_database_blip(
    gearmand, worker_factory, database_proxy, log_path
):
    """Row 10: a worker that serves only a limited function, and holds no right, has a
    3 s database blip: it drops the broken connection and claims again, so once the slot
    frees both waiting jobs run."""
    Throttle.objects.create(
        function="tests.solo", slot=0, holder="elsewhere:1", until=time.time() + 5
    )
    url = database_proxy.url(os.environ["DATABASE_URL"])
    worker_factory([gearmand], "--function", "tests.solo", extra_env={"DATABASE_URL": url})
    wait_until(lambda: database_proxy.connections, what="the worker to reach the database")
    jobs = [submit("tests.solo", [str(log_path), 0.1]) for _ in range(2)]
    database_proxy.cut()
    time.sleep(3)
    database_proxy.heal()
    # The other holder's lease ends 5 s after it was written: then the worker claims it.
    for job in jobs:
        wait_for_status("tests.solo", job.key, Status.COMPLETE, timeout=20)


def executions_lines(path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []
