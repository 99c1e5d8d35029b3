"""``manage.py gearworker`` against real gearmand: crashes, retries, signals, restarts."""

from __future__ import annotations

import os
import signal

import pytest

from django_gearattach import attach, submit
from django_gearattach.gearman.connection import admin_command
from django_gearattach.gearman.protocol import parse_status
from django_gearattach.gearman.rendezvous import Address
from django_gearattach.models import Job, Status
from django_gearattach.testing import wait_for_workers
from tests.conftest import executions
from tests.helpers import (
    AttachThread,
    foreground_clients,
    key_homed_on,
    second_copy,
    wait_for_status,
    wait_until,
)

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_worker_killed_mid_job_is_replaced_and_the_record_ends_consistent(
    gearmand, worker_factory, log_path, tmp_path
):
    gate = tmp_path / "gate"
    worker_factory([gearmand])
    worker_factory([gearmand])
    wait_for_workers(gearmand.address, "tests.record", 2)
    job = submit("tests.record", [str(log_path)], {"gate": str(gate)})
    first = wait_for_status("tests.record", job.key, Status.RUNNING)
    attacher = AttachThread("tests.record", job.key)
    attacher.start()
    wait_until(lambda: len(executions(log_path)) == 1, what="the first execution")
    wait_until(lambda: foreground_clients(gearmand.address, job.key) == 1, what="the attacher")
    os.kill(first.worker_pid, signal.SIGKILL)
    # gearmand requeues the job; the other worker runs it again.
    wait_until(lambda: len(executions(log_path)) == 2, what="the second execution")
    gate.touch()
    events = attacher.result()
    # It joined the running job: it hears the second worker start it over (and the first
    # one too if it joined before that one's start signal left).
    kinds = [e.event for e in events]
    assert kinds[-1] == "complete"
    assert set(kinds[:-1]) == {"started"}
    record = Job.objects.get(key=job.key)
    assert record.status == Status.COMPLETE
    assert record.attempts == 2
    assert record.worker_pid != first.worker_pid
    assert record.result == events[-1].result
    assert record.result["done"] == executions(log_path)[1]


def test_a_job_that_keeps_killing_its_worker_fails_after_max_attempts(
    gearmand, worker_factory, log_path, settings
):
    # --concurrency 2: the supervisor replaces each child the task kills.
    worker_factory([gearmand], "--concurrency", "2")
    job = submit("tests.suicide", [str(log_path)])
    events = list(attach("tests.suicide", job.key, timeout=60))
    assert events[-1].event == "failed"
    assert "gave up after 3 attempts" in events[-1].error
    assert len(executions(log_path)) == 3
    record = Job.objects.get(key=job.key)
    assert (record.status, record.attempts) == (Status.FAILED, 3)


def test_sigterm_finishes_the_current_job_before_exiting(gearmand, worker, log_path, tmp_path):
    gate = tmp_path / "gate"
    job = submit("tests.record", [str(log_path)], {"gate": str(gate)})
    wait_for_status("tests.record", job.key, Status.RUNNING)
    worker.process.send_signal(signal.SIGTERM)
    wait_until(lambda: "finishing the current job" in worker.output(), what="the signal log")
    assert worker.process.poll() is None
    gate.touch()
    assert worker.process.wait(15) == 0
    assert Job.objects.get(key=job.key).status == Status.COMPLETE


def test_sigterm_stops_every_child_of_a_concurrent_worker(gearmand, worker_factory):
    worker = worker_factory([gearmand], "--concurrency", "2")
    wait_for_workers(gearmand.address, "tests.add", 2)
    assert worker.stop(signal.SIGTERM) == 0
    wait_until(lambda: registered_workers(gearmand.address, "tests.add") == 0, what="no workers")
    job = submit("tests.add", [1, 1])
    assert Job.objects.get(key=job.key).status == Status.QUEUED


def test_the_worker_reconnects_when_gearmand_restarts(gearmand, worker):
    wait_for_workers(gearmand.address, "tests.add")
    gearmand.restart()
    job = submit("tests.add", [20, 22])
    assert list(attach("tests.add", job.key, timeout=30))[-1].result == 42


def test_one_log_line_per_job(gearmand, worker):
    job = submit("tests.add", [1, 2])
    list(attach("tests.add", job.key, timeout=20))
    wait_until(lambda: f"tests.add[{job.key}] complete" in worker.output(), what="the log line")


def registered_workers(address: str, function: str) -> int:
    statuses = parse_status(admin_command(Address.parse(address), "status"))
    return sum(s.workers for s in statuses if s.function == function)


def test_function_option_limits_what_the_worker_runs(gearmand, worker_factory):
    worker_factory([gearmand], "--function", "tests.add")
    wait_for_workers(gearmand.address, "tests.add")
    statuses = parse_status(admin_command(Address.parse(gearmand.address), "status"))
    assert {s.function for s in statuses if s.workers} == {"tests.add"}


def test_unknown_function_option_is_a_clear_error(gearmand, worker_factory):
    worker = worker_factory([gearmand], "--function", "tests.nope")
    assert worker.process.wait(20) != 0
    assert "no task is registered as 'tests.nope'" in worker.output()


def test_children_exit_when_their_supervisor_is_killed(gearmand, worker_factory):
    worker = worker_factory([gearmand], "--concurrency", "2")
    wait_for_workers(gearmand.address, "tests.add", 2)
    worker.process.kill()  # SIGKILL: the supervisor cannot forward anything
    wait_until(lambda: registered_workers(gearmand.address, "tests.add") == 0, what="no workers")


def test_sigterm_while_waiting_on_another_runs_claim_exits_without_starting_the_job(
    gearmand_factory, worker_factory, settings, monkeypatch, log_path, tmp_path
):
    """A worker holds a copy of a job that another run holds the claim of, and waits for
    its outcome. SIGTERM: it hands the copy back and exits at once, and it does not
    start the job even when that claim expires meanwhile (its holder is paused)."""
    a, b = gearmand_factory(), gearmand_factory()
    settings.GEARATTACH = {**settings.GEARATTACH, "SERVERS": [a.address, b.address]}
    monkeypatch.setenv("GEARATTACH_LEASE", "1.5")
    gate = tmp_path / "gate"
    key = key_homed_on(a.address, "stop-waiting")
    holder, waiting = worker_factory([a]), worker_factory([b])
    wait_for_workers(b.address, "tests.record")
    submit("tests.record", [str(log_path)], {"gate": str(gate)}, key=key)
    wait_until(lambda: len(executions(log_path)) == 1, what="the holder's run")
    second_copy(b.address, "tests.record", key)
    wait_until(lambda: "runs elsewhere (a live claim)" in waiting.output(), what="the wait")
    os.kill(holder.pid, signal.SIGSTOP)  # its claim expires while the other stops
    try:
        waiting.process.send_signal(signal.SIGTERM)
        assert waiting.process.wait(10) == 0  # while the holder's run still holds the job
        assert len(executions(log_path)) == 1  # the stopping worker never started it
    finally:
        os.kill(holder.pid, signal.SIGCONT)
    assert "handed back unrun: the worker stops" in waiting.output()
    gate.touch()
    assert wait_for_status("tests.record", key, Status.COMPLETE).attempts == 1
