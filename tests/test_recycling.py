"""``gearworker --max-jobs-per-child`` and ``--max-memory-per-child`` (recycling.py)."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter

import pytest

from django_gearattach import submit
from django_gearattach.models import Job, Status
from django_gearattach.testing import wait_for_workers

from .conftest import ROOT, executions
from .helpers import wait_for_status, wait_until

pytestmark = pytest.mark.django_db(transaction=True)


def _pids(log_path) -> Counter[str]:
    return Counter(line.split("-")[0] for line in executions(log_path))


def test_max_jobs_per_child_replaces_processes_and_loses_nothing(
    gearmand, worker_factory, log_path, tmp_path
):
    worker_factory([gearmand], "--max-jobs-per-child", "2", "--concurrency", "2")
    wait_for_workers(gearmand.address, "tests.record", 2)
    jobs = [submit("tests.record", [str(log_path)]) for _ in range(12)]
    for job in jobs:
        wait_for_status("tests.record", job.key, Status.COMPLETE)
    lines = executions(log_path)
    assert len(lines) == 12  # each ran once
    assert len(set(lines)) == 12
    per_process = _pids(log_path)
    assert max(per_process.values()) <= 2
    assert len(per_process) >= 6
    assert all(r.attempts == 1 for r in Job.objects.filter(function="tests.record"))


def test_a_recycled_process_finishes_its_job_first(gearmand, worker_factory, log_path, tmp_path):
    gate = tmp_path / "gate"
    worker_factory([gearmand], "--max-jobs-per-child", "1")
    wait_for_workers(gearmand.address, "tests.record", 1)
    slow = submit("tests.record", [str(log_path)], {"gate": str(gate)})
    running = wait_for_status("tests.record", slow.key, Status.RUNNING)
    queued = submit("tests.record", [str(log_path)])
    gate.touch()
    done = wait_for_status("tests.record", slow.key, Status.COMPLETE)
    after = wait_for_status("tests.record", queued.key, Status.COMPLETE)
    assert done.worker_pid == running.worker_pid  # it finished where it started
    assert after.worker_pid != done.worker_pid  # in the next process
    assert len(executions(log_path)) == 2


def test_max_memory_per_child_recycles_after_the_job(gearmand, worker_factory, log_path):
    # 1 MB: every process is over it after its first job.
    worker_factory([gearmand], "--max-memory-per-child", "1")
    wait_for_workers(gearmand.address, "tests.record", 1)
    jobs = [submit("tests.record", [str(log_path)]) for _ in range(4)]
    for job in jobs:
        wait_for_status("tests.record", job.key, Status.COMPLETE)
    wait_until(lambda: len(executions(log_path)) == 4)
    per_process = _pids(log_path)
    assert sum(per_process.values()) == 4
    # One job per process (two when a job was grabbed ahead on PostgreSQL: it runs first).
    assert max(per_process.values()) <= 2
    assert len(per_process) >= 2


@pytest.mark.parametrize("option", ["--max-jobs-per-child", "--max-memory-per-child"])
def test_recycling_options_refuse_non_positive_numbers(option):
    result = subprocess.run(
        [sys.executable, "-m", "django", "gearworker", "--settings=tests.settings", option, "0"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert f"{option}: must be at least 1" in result.stderr
