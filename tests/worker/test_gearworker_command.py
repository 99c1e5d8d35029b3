"""``manage.py gearworker``: its start-up summary and ``--reload``."""

from __future__ import annotations

import os

import pytest

from django_gearattach import __version__, submit
from django_gearattach.models import Status
from django_gearattach.testing import free_port, wait_for_workers
from tests.conftest import ROOT
from tests.helpers import wait_for_status, wait_until

pytestmark = pytest.mark.django_db(transaction=True)


def test_the_start_up_summary_names_servers_functions_processes(gearmand, worker_factory):
    down = f"127.0.0.1:{free_port()}"
    worker = worker_factory([gearmand], "--concurrency", "2")
    worker.env["GEARATTACH_SERVERS"] += f",{down}"
    worker.stop()
    worker.start()
    wait_for_workers(gearmand.address, "tests.add", 2)
    out = worker.output()
    assert out.count(f"gearworker {__version__}, pid {worker.pid}") == 1
    assert f"{gearmand.address}  gearmand 1.1" in out
    assert f"{down}  unreachable" in out
    assert "functions  " in out
    assert "tests.add" in out
    assert "gearattach.offload" in out
    assert "processes  2" in out
    assert "reload     off" in out


def test_reload_restarts_the_workers_when_code_changes(gearmand, worker_factory):
    worker = worker_factory([gearmand], "--reload")
    wait_for_workers(gearmand.address, "tests.add", 1)
    first = wait_for_status("tests.add", submit("tests.add", [1, 2]).key, Status.COMPLETE)
    tasks = ROOT / "tests" / "testapp" / "tasks.py"
    before = tasks.stat()
    try:
        os.utime(tasks, ns=(before.st_atime_ns, before.st_mtime_ns + 5_000_000_000))
        wait_until(
            lambda: "tasks.py changed: stopping the worker processes" in worker.output(),
            what="the supervisor to notice the change",
        )
        summary = f"gearworker {__version__}, pid {worker.pid}"
        wait_until(lambda: worker.output().count(summary) == 2, what="the restart's summary")
    finally:
        os.utime(tasks, ns=(before.st_atime_ns, before.st_mtime_ns))
    second = wait_for_status("tests.add", submit("tests.add", [3, 4]).key, Status.COMPLETE)
    assert second.result == 7
    assert second.worker_pid != first.worker_pid  # a new worker process ran it
    assert worker.process.poll() is None  # the same supervisor (exec), still running


def test_a_failed_job_is_logged_with_its_exception_and_traceback(gearmand, worker_factory):
    """Issue 21: the worker's console is where a developer looks first, not the admin."""
    worker = worker_factory([gearmand])
    wait_for_workers(gearmand.address, "tests.fail", 1)
    key = submit("tests.fail", ["the disk is full"]).key
    wait_for_status("tests.fail", key, Status.FAILED)
    wait_until(lambda: f"job tests.fail[{key}] failed in" in worker.output(), what="the log")
    out = worker.output()
    assert f"job tests.fail[{key}] raised ValueError: the disk is full" in out
    assert "Traceback (most recent call last):" in out
    assert "raise ValueError(message)" in out  # the task's own line
