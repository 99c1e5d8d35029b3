"""Interoperability with real Gearman peers: pygearman and the stock ``gearman`` CLI.

Jobs submitted by foreign clients run on our gearworker, and our ``attach`` follows
them; foreign clients attach to jobs our API submitted. Everything goes through a real
gearmand and a real ``manage.py gearworker`` subprocess.
"""

from __future__ import annotations

import json
import subprocess
import threading
import uuid
from collections.abc import Callable
from typing import Any

import gearman
import pytest
from django.db import connection as db_connection

import django_gearattach
from django_gearattach.attachment import JobEvent, attach
from django_gearattach.gearman.client import Client, UniqueStatus
from django_gearattach.gearman.rendezvous import Address
from django_gearattach.models import Job, Status
from django_gearattach.submission import submit
from django_gearattach.testing import wait_for_workers
from tests.conftest import executions
from tests.helpers import wait_until

pytestmark = pytest.mark.django_db(transaction=True)

TIMEOUT = 15.0


def new_key() -> str:
    return f"interop-{uuid.uuid4().hex[:16]}"


def finished_record(function: str, key: str) -> Job:
    """The job's record once a worker has stored its outcome."""
    record: Job = wait_until(lambda: Job.objects.for_key(function, key).finished().first())
    return record


def cli(gearmand, *args: str, timeout: float = TIMEOUT) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        ["gearman", "-p", str(gearmand.port), *args], capture_output=True, timeout=timeout
    )


@pytest.fixture
def serving(gearmand, worker):
    """gearmand plus one gearworker that has registered its functions."""
    wait_for_workers(gearmand.address, "tests.add")
    wait_for_workers(gearmand.address, "tests.record")
    return gearmand


def attach_events(function: str, key: str) -> list[JobEvent]:
    return list(attach(function, key, timeout=TIMEOUT))


def in_thread(target: Callable[[], object]) -> tuple[threading.Thread, dict[str, Any]]:
    """Run ``target`` in a thread; its result or exception lands in the returned dict."""
    out: dict[str, Any] = {}

    def run() -> None:
        try:
            out["result"] = target()
        except BaseException as exc:  # reported by the test, not lost in the thread
            out["error"] = exc
        finally:
            db_connection.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, out


def gearmand_status(gearmand, key: str) -> UniqueStatus:
    """What gearmand itself says about ``key`` (GET_STATUS_UNIQUE)."""
    client = Client(timeout=5)
    try:
        return client.status_unique(Address.parse(gearmand.address), key.encode())
    finally:
        client.close()


# -- foreign clients submit, we attach -------------------------------------------------


def test_pygearman_background_job_runs_on_our_worker_and_attach_reads_the_record(serving, worker):
    key = new_key()
    client = gearman.GearmanClient([serving.address])
    request = client.submit_job(
        "tests.add", '{"args":[2,3]}', unique=key, background=True, poll_timeout=TIMEOUT
    )
    assert request.state == gearman.constants.JOB_CREATED
    assert not request.timed_out

    # Nobody inserted a record: the worker upserted it when it started the job.
    record = finished_record("tests.add", key)
    assert record.status == Status.COMPLETE
    assert record.result == 5
    assert record.arguments == {"args": [2, 3], "kwargs": {}}
    assert record.attempts == 1
    assert record.server == serving.address
    assert record.handle == request.job.handle.decode()
    assert record.worker_pid == worker.pid

    # The public, lazily imported API is the same function. (getattr because mypy does
    # not see the lazy exports of the package: its __all__ is not a literal list.)
    assert getattr(django_gearattach, "attach") is attach  # noqa: B009
    assert attach_events("tests.add", key) == [JobEvent("complete", result=5)]
    # Attaching ran nothing: gearmand forgets the key once the worker has reported the
    # outcome (which it commits first, so this may take a moment), and the job ran once.
    wait_until(lambda: not gearmand_status(serving, key).known, what="gearmand to forget it")
    assert Job.objects.for_key("tests.add", key).get().attempts == 1


def test_cli_background_job_runs_on_our_worker_and_we_attach(serving):
    key = new_key()
    done = cli(serving, "-f", "tests.add", "-u", key, "-b", '{"args":[1,2]}')
    assert done.returncode == 0, done.stderr

    # Attach at once, whatever state the job is in by now.
    events = attach_events("tests.add", key)
    assert events[-1] == JobEvent("complete", result=3)
    assert all(not event.terminal for event in events[:-1])
    record = Job.objects.for_key("tests.add", key).get()
    assert (record.status, record.result, record.attempts) == (Status.COMPLETE, 3, 1)


# -- foreign clients attach to a job our API submitted ---------------------------------


def test_cli_pygearman_and_attach_all_join_one_execution(serving, log_path, tmp_path):
    key = new_key()
    gate = tmp_path / "gate"
    record = submit("tests.record", kwargs={"log_path": str(log_path), "gate": str(gate)}, key=key)
    assert record.status == Status.QUEUED
    # Attach only once it runs: a foreground client leaving a queued job would drop it.
    wait_until(lambda: Job.objects.for_key("tests.record", key).filter(status="running").exists())
    wait_until(lambda: len(executions(log_path)) == 1)  # the task logs just after it starts

    cli_attacher = subprocess.Popen(
        ["gearman", "-p", str(serving.port), "-f", "tests.record", "-u", key, "-s"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )

    def pygearman_attach():
        client = gearman.GearmanClient([serving.address])
        return client.submit_job(
            "tests.record", "", unique=key, background=False, poll_timeout=TIMEOUT
        )

    py_thread, py_out = in_thread(pygearman_attach)
    our_thread, our_out = in_thread(lambda: attach_events("tests.record", key))
    try:
        # Three foreground clients on the one running job: CLI, pygearman, our attach.
        wait_until(lambda: gearmand_status(serving, key).clients == 3)
        gate.touch()
        stdout, stderr = cli_attacher.communicate(timeout=TIMEOUT)
    finally:
        gate.touch()
        if cli_attacher.poll() is None:
            cli_attacher.kill()
            cli_attacher.communicate()
    py_thread.join(TIMEOUT)
    our_thread.join(TIMEOUT)

    record = finished_record("tests.record", key)
    assert record.status == Status.COMPLETE
    (execution,) = executions(log_path)
    assert record.result == {"done": execution}
    assert record.attempts == 1

    assert cli_attacher.returncode == 0, stderr
    assert json.loads(stdout) == record.result

    assert "error" not in py_out, py_out.get("error")
    request = py_out["result"]
    assert request.state == gearman.constants.JOB_COMPLETE
    assert json.loads(request.result) == record.result

    assert "error" not in our_out, our_out.get("error")
    assert our_out["result"][-1] == JobEvent("complete", result=record.result)

    # Every attacher joined the same execution: the task ran exactly once.
    assert executions(log_path) == [execution]


# -- bad payloads ----------------------------------------------------------------------


def test_cli_payload_that_is_not_json_fails_the_job_and_the_worker_goes_on(serving, worker):
    key = new_key()
    done = cli(serving, "-f", "tests.add", "-u", key, "-b", "2 plus 3, please")
    assert done.returncode == 0, done.stderr

    record = finished_record("tests.add", key)
    assert record.status == Status.FAILED
    assert record.error.startswith("BadPayload: ")
    assert "not JSON" in record.error
    assert '{"args": [...], "kwargs": {...}}' in record.error
    assert record.arguments is None
    assert record.result is None
    assert attach_events("tests.add", key) == [JobEvent("failed", error=record.error)]

    # The same worker process serves the next job.
    next_key = new_key()
    done = cli(serving, "-f", "tests.add", "-u", next_key, "-b", '{"args":[4,5]}')
    assert done.returncode == 0, done.stderr
    assert attach_events("tests.add", next_key)[-1] == JobEvent("complete", result=9)
    assert worker.process.poll() is None
    assert Job.objects.for_key("tests.add", next_key).get().worker_pid == worker.pid


@pytest.mark.parametrize(
    "payload",
    ['["not", "an", "object"]', '{"args": [1, 2], "extra": true}', '{"args": {"a": 1}}'],
)
def test_cli_json_that_is_not_our_shape_fails_with_bad_payload(serving, payload):
    key = new_key()
    assert cli(serving, "-f", "tests.add", "-u", key, "-b", payload).returncode == 0
    record = finished_record("tests.add", key)
    assert record.status == Status.FAILED
    assert record.error.startswith("BadPayload: ")


# -- keys with control characters (review 3, finding 10) ----------------------------------


def test_a_key_with_a_newline_is_refused_and_forges_no_log_line(serving, worker):
    """A newline in a job key wrote a line of its own to the worker's log:
    ``job admin.reset_all_passw] complete``."""
    forged = "x] complete in 0.1s\njob admin.reset_all_passw"
    done = cli(serving, "-f", "tests.add", "-u", forged, "-s", '{"args":[1,2]}')
    assert done.returncode != 0 or b"3" not in done.stdout  # it never ran
    wait_until(lambda: "control characters" in worker.output(), what="the refusal")
    lines = worker.output().splitlines()
    assert not [line for line in lines if line.startswith("job admin")], lines[-5:]
    (refusal,) = [line for line in lines if "control characters" in line]
    assert "\\njob admin.reset_all_passw" in refusal  # quoted as %r quotes it
    assert not Job.objects.filter(function="tests.add").exists()
    # Nor can this site's own API make such a key.
    with pytest.raises(django_gearattach.InvalidKey, match="control characters"):
        submit("tests.add", [1, 2], key=forged)
    with pytest.raises(django_gearattach.InvalidKey, match="control characters"):
        list(attach("tests.add", forged))
    # The worker goes on.
    key = new_key()
    assert cli(serving, "-f", "tests.add", "-u", key, "-b", '{"args":[4,5]}').returncode == 0
    assert attach_events("tests.add", key)[-1] == JobEvent("complete", result=9)


# -- foreign foreground clients of a job that fails --------------------------------------


def test_cli_foreground_client_learns_that_a_job_failed(serving):
    key = new_key()
    process = subprocess.Popen(
        ["gearman", "-p", str(serving.port), "-f", "tests.fail", "-u", key, "-s"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        record = finished_record("tests.fail", key)
        assert record.status == Status.FAILED
        assert record.error == "ValueError: boom"
        try:
            _, stderr = process.communicate(timeout=5)
        except subprocess.TimeoutExpired:
            pytest.fail(
                "the gearman CLI still waits 5 s after the job failed: it never got a "
                "WORK_FAIL it could match to its job handle"
            )
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode != 0
    assert b"Job failed" in stderr


def test_pygearman_foreground_client_learns_that_a_job_failed(serving):
    key = new_key()
    client = gearman.GearmanClient([serving.address])
    request = client.submit_job(
        "tests.fail", "", unique=key, background=False, poll_timeout=TIMEOUT
    )
    assert request.state == gearman.constants.JOB_FAILED
    assert not request.timed_out
    assert finished_record("tests.fail", key).error == "ValueError: boom"


# -- we attach to a running job that a foreign client submitted -------------------------


@pytest.mark.parametrize("submitter", ["cli", "pygearman"])
def test_our_attachers_join_a_running_foreign_job_and_it_runs_once(
    serving, log_path, tmp_path, submitter
):
    key = new_key()
    gate = tmp_path / "gate"
    payload = json.dumps({"kwargs": {"log_path": str(log_path), "gate": str(gate)}})
    if submitter == "cli":
        done = cli(
            serving, "-f", "tests.chatty", "-u", key, "-b", json.dumps({"args": [str(gate)]})
        )
        assert done.returncode == 0, done.stderr
        function = "tests.chatty"
    else:
        client = gearman.GearmanClient([serving.address])
        client.submit_job("tests.record", payload, unique=key, background=True)
        function = "tests.record"
    # The worker records the foreign job when it starts it (an upsert by function and key).
    wait_until(lambda: Job.objects.for_key(function, key).filter(status="running").exists())
    threads = [in_thread(lambda: attach_events(function, key)) for _ in range(3)]
    wait_until(lambda: gearmand_status(serving, key).clients == 3)
    gate.touch()
    for thread, _ in threads:
        thread.join(TIMEOUT)
    record = finished_record(function, key)
    assert record.status == Status.COMPLETE
    for _, out in threads:
        assert "error" not in out, out.get("error")
        assert out["result"][-1] == JobEvent("complete", result=record.result)
    if submitter == "cli":
        assert [e.event for e in threads[0][1]["result"]] == [
            "status",
            "data",
            "warning",
            "status",
            "complete",
        ]
    else:
        assert executions(log_path) == [record.result["done"]]
    assert record.attempts == 1
