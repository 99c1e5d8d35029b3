"""Push, never poll: attachers hear a queued job start and end, and never lose it.

Every test runs against real gearmand and real ``gearworker`` processes. Each way an
attacher can leave a queued job it follows in the foreground is one test: it gives up
(tests/test_attachment.py), its event loop ends, its process exits or is killed with
SIGKILL (the recovery sweep's case), it joined a job that gearmand had already
dropped, or an operator cancels the job under it.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
import types
from pathlib import Path

import pytest
from django.db import close_old_connections, connection

from django_gearattach import AttachTimeout, aattach, attach, submit
from django_gearattach.attachment import JobEvent
from django_gearattach.clients import get_client
from django_gearattach.gearman.connection import Connection
from django_gearattach.gearman.protocol import Command
from django_gearattach.gearman.rendezvous import Address
from django_gearattach.models import Job, Status
from django_gearattach.operations import cancel
from tests.conftest import ROOT, executions
from tests.helpers import AttachThread, foreground_clients, wait_for_status, wait_until

pytestmark = pytest.mark.django_db(transaction=True)


def kinds(events: list[JobEvent]) -> list[str]:
    return [e.event for e in events]


def run_async_attach(job: Job, timeout: float | None = 30) -> list[JobEvent]:
    """``aattach`` in an event loop of its own, closed when it returns (``asyncio.run``)."""

    async def follow() -> list[JobEvent]:
        return [event async for event in aattach(job, timeout=timeout)]

    return asyncio.run(follow())


class AsyncAttachThread(threading.Thread):
    def __init__(self, job: Job) -> None:
        super().__init__(daemon=True)
        self.job = job
        self.events: list[JobEvent] = []

    def run(self) -> None:
        try:
            self.events = run_async_attach(self.job)
        finally:
            close_old_connections()

    def result(self) -> list[JobEvent]:
        self.join(35)
        assert not self.is_alive(), "aattach did not finish"
        return self.events


def test_sync_and_async_attachers_of_a_queued_job_hear_it_start_and_end(
    gearmand, worker_factory, log_path
):
    job = submit("tests.record", [str(log_path)], {"steps": 2})
    sync, in_loop = AttachThread("tests.record", job.key), AsyncAttachThread(job)
    sync.start()
    in_loop.start()
    wait_until(lambda: foreground_clients(gearmand.address, job.key) == 2, what="2 attachers")
    worker_factory([gearmand])
    # Attached before any worker ran: they heard that none did, then the run.
    expected = ["unserved", "started", "status", "status", "complete"]
    assert kinds(sync.result()) == expected
    assert kinds(in_loop.result()) == expected
    assert len(executions(log_path)) == 1


class _NoSleep(types.SimpleNamespace):
    def sleep(self, seconds: float) -> None:
        raise AssertionError(f"attach slept {seconds} s")


async def _no_async_sleep(seconds: float) -> None:
    raise AssertionError(f"aattach slept {seconds} s")


def test_an_attach_never_sleeps_before_its_first_question(gearmand, worker, log_path, monkeypatch):
    done = submit("tests.record", [str(log_path)])
    stale = Job.objects.get(pk=done.pk)  # says queued
    wait_for_status("tests.record", done.key, Status.COMPLETE)
    monkeypatch.setattr("django_gearattach.attachment.time", _NoSleep(monotonic=time.monotonic))
    monkeypatch.setattr(
        "django_gearattach.attachment.asyncio", types.SimpleNamespace(sleep=_no_async_sleep)
    )
    # A stale record: gearmand and the record are asked at once, and answer.
    assert kinds(list(attach(stale))) == ["complete"]
    assert kinds(run_async_attach(stale)) == ["complete"]
    # A fresh one: followed from the start, to its end.
    fresh = submit("tests.record", [str(log_path)])
    assert kinds(list(attach(fresh, timeout=30)))[-1] == "complete"
    other = submit("tests.record", [str(log_path)])
    assert kinds(run_async_attach(other))[-1] == "complete"
    assert len(executions(log_path)) == 3  # nothing ran twice
    # The markers sent for the stale record end without running anything (the sync one is
    # dropped; the async one, handed to linger as its loop closed, is answered by the worker).
    address = Address.parse(gearmand.address)
    wait_until(lambda: not get_client().status_unique(address, done.key.encode()).known)
    assert len(executions(log_path)) == 3


def test_an_event_loop_that_ends_while_aattach_waits_never_drops_the_job(
    gearmand, worker_factory, log_path
):
    job = submit("tests.record", [str(log_path)])  # no worker yet
    with pytest.raises(AttachTimeout):
        run_async_attach(job, timeout=0.3)  # then asyncio.run closes the loop
    # Handed to linger: its connection joined before the loop's own one closed.
    wait_until(lambda: foreground_clients(gearmand.address, job.key) == 1)
    worker_factory([gearmand])
    events = [k for k in kinds(list(attach(job, timeout=30))) if k != "unserved"]
    assert events == ["started", "complete"]  # "unserved" first if the worker was not up yet
    assert len(executions(log_path)) == 1


def _attacher_process(gearmand, key: str, *args: str) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "GEARATTACH_TEST_DATABASE": str(connection.settings_dict["NAME"]),
        "GEARATTACH_SERVERS": gearmand.address,
    }
    command = ["gearattach", "--settings=tests.settings", "attach", "tests.record", key, *args]
    return subprocess.Popen(
        [sys.executable, "-m", "django", *command],
        env=env,
        cwd=str(ROOT),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def test_an_attacher_process_killed_or_exiting_before_its_job_started_loses_nothing(
    gearmand, worker_factory, log_path, monkeypatch
):
    """gearmand drops both jobs when their attachers' connections close; the sweep resubmits."""
    killed = submit("tests.record", [str(log_path)])
    timed_out = submit("tests.record", [str(log_path)])
    victim = _attacher_process(gearmand, killed.key)
    quitter = _attacher_process(gearmand, timed_out.key, "--timeout", "5")

    def clients(job: Job) -> int:
        return foreground_clients(gearmand.address, job.key)

    for job in (killed, timed_out):
        wait_until(lambda job=job: clients(job) == 1)  # type: ignore[misc]
    victim.send_signal(signal.SIGKILL)
    victim.wait(10)
    output = quitter.communicate(timeout=30)[0].decode()
    assert quitter.returncode != 0
    assert "did not start in time: no worker is running for 'tests.record'" in output
    for job in (killed, timed_out):
        wait_until(lambda job=job: clients(job) == 0)  # type: ignore[misc]
    # A worker that sweeps every 0.2 s and resubmits what gearmand lost for 0.3 s.
    monkeypatch.setenv("GEARATTACH_RECOVERY_INTERVAL", "0.2")
    monkeypatch.setenv("GEARATTACH_RECOVERY_GRACE", "0.3")
    worker = worker_factory([gearmand])
    for job in (killed, timed_out):
        wait_for_status("tests.record", job.key, Status.COMPLETE)
    assert len(executions(log_path)) == 2
    assert "job(s) that gearmand had lost resubmitted" in worker.output()


def test_an_attacher_that_joined_a_job_gearmand_had_dropped_revives_it(
    gearmand, worker, log_path, settings, tmp_path
):
    settings.GEARATTACH = {**settings.GEARATTACH, "CHECK_INTERVAL": 0.1}
    gate = tmp_path / "gate"
    blocker = submit("tests.record", [str(tmp_path / "blocker.log")], {"gate": str(gate)})
    wait_for_status("tests.record", blocker.key, Status.RUNNING)  # the one worker is busy
    job = submit("tests.record", [str(log_path)])
    address = Address.parse(gearmand.address)
    left = Connection(address)  # a foreign attacher that joins and leaves: gearmand
    left.request(Command.SUBMIT_JOB, "tests.record", job.key, b"", reply=Command.JOB_CREATED)
    left.close()  # marks the queued job abandoned
    attacher = AttachThread("tests.record", job.key)
    attacher.start()
    wait_until(lambda: foreground_clients(gearmand.address, job.key) == 1)
    gate.touch()  # the worker frees the abandoned job instead of running it...
    # ...and the attacher, which gearmand tells nothing, finds it gone and revives it.
    assert kinds(attacher.result()) == ["started", "complete"]
    assert len(executions(log_path)) == 1


def test_cancelling_a_queued_job_ends_its_attachers_at_once(gearmand, log_path):
    job = submit("tests.record", [str(log_path)])  # no worker: it stays queued
    attacher = AttachThread("tests.record", job.key)
    attacher.start()
    wait_until(lambda: foreground_clients(gearmand.address, job.key) == 1)
    cancel(job)
    assert [e.as_dict() for e in attacher.result() if e.event != "unserved"] == [
        {"event": "failed", "error": "cancelled before it started"}
    ]
    assert not Path(log_path).exists()
