"""The blocking client (``gearman/client.py``) against real gearmand processes.

Workers here are raw connections driven packet by packet, so each test
decides exactly what gearmand sees and when.
"""

from __future__ import annotations

import pytest

from django_gearattach.gearman import linger
from django_gearattach.gearman.client import (
    ForegroundJob,
    WorkEvent,
    event_from_packet,
)
from django_gearattach.gearman.connection import Connection, admin_command
from django_gearattach.gearman.errors import ConnectionFailed, ServerError
from django_gearattach.gearman.protocol import Command, Packet, parse_status
from tests.helpers import wait_until
from tests.rawgearman import TIMEOUT, collect, new_function, new_key


def test_submit_background_and_status_unique_follow_a_job(address, client, raw_workers):
    function, key = new_function(), new_key()
    handle = client.submit_background(address, function, key, b"payload")
    assert handle.startswith(b"H:")
    # The same (function, unique) coalesces into the same job.
    assert client.submit_background(address, function, key, b"other") == handle

    queued = client.status_unique(address, key)
    assert (queued.unique, queued.known, queued.running, queued.clients) == (key, True, False, 0)

    worker = raw_workers(address, function)
    assigned = worker.grab()
    assert assigned.args == (handle, function.encode(), key, b"payload")
    worker.conn.send(Command.WORK_STATUS, handle, 2, 7)

    def running():
        status = client.status_unique(address, key)
        return status if status.numerator == 2 else None

    status = wait_until(running)
    assert (status.known, status.running, status.numerator, status.denominator) == (
        True,
        True,
        2,
        7,
    )

    worker.conn.send(Command.WORK_COMPLETE, handle, b"done")
    gone = wait_until(lambda: not client.status_unique(address, key).known)
    assert gone
    unknown = client.status_unique(address, new_key())
    assert (unknown.known, unknown.running, unknown.clients) == (False, False, 0)


def test_submit_background_priorities_reach_gearmand(address, client, raw_workers):
    function = new_function()
    keys = {p: new_key() for p in ("low", "normal", "high")}
    for priority, key in keys.items():
        client.submit_background(address, function, key, priority.encode(), priority=priority)
    worker = raw_workers(address, function)
    order = [worker.grab().args[3] for _ in keys]
    assert order == [b"high", b"normal", b"low"]


def test_echo(address, client):
    assert client.echo(address) == b"ping"
    assert client.echo(address, b"with\0nul") == b"with\0nul"


def test_a_65_byte_unique_is_refused_before_anything_is_sent(gearmand, address, client):
    function = new_function()
    with pytest.raises(ValueError, match="at most 63 bytes, got 65"):
        client.submit_background(address, function, b"k" * 65, b"")
    with pytest.raises(ValueError, match="at most 63 bytes"):
        client.foreground(address, function, b"k" * 65, b"")
    # gearmand never answers GET_STATUS_UNIQUE for 64 bytes, so this must not be sent either.
    with pytest.raises(ValueError, match="at most 63 bytes, got 64"):
        client.status_unique(address, b"k" * 64)
    assert not client.connection(address).connected
    assert function not in {s.function for s in parse_status(admin_command(address, "status"))}

    # What the check protects against: gearmand itself refuses the 65-byte key.
    with Connection(address, timeout=TIMEOUT) as raw, pytest.raises(ServerError) as info:
        raw.request(Command.SUBMIT_JOB_BG, function, b"k" * 65, b"", reply=Command.JOB_CREATED)
    assert info.value.code == "ARGUMENT_TOO_LARGE"


def test_work_fail_ends_a_foreground_job(address, client, raw_workers):
    function, key = new_function(), new_key()
    worker = raw_workers(address, function)
    with client.foreground(address, function, key, b"") as job:
        handle = worker.grab().args[0]
        assert handle == job.handle
        worker.conn.send(Command.WORK_FAIL, handle)
        assert collect(job) == [WorkEvent("failed", handle)]
        assert job.finished


def test_work_fail_with_gearmands_trailing_nul_is_matched_to_its_handle(
    address, client, raw_workers
):
    # gearmand turns WORK_EXCEPTION into WORK_FAIL for a client that did not ask for
    # exceptions, and writes the handle followed by a NUL.
    function, key = new_function(), new_key()
    raw = Connection(address, timeout=TIMEOUT)
    handle = raw.request(Command.SUBMIT_JOB, function, key, b"", reply=Command.JOB_CREATED).args[0]
    worker = raw_workers(address, function)
    assert worker.grab().args[0] == handle
    worker.conn.send(Command.WORK_EXCEPTION, handle, b"ValueError: boom")
    packet = raw.read_packet()
    assert packet == Packet(Command.WORK_FAIL, (handle + b"\0",))
    assert event_from_packet(packet) == WorkEvent("failed", handle)

    # The same conversion, seen through a ForegroundJob on such a connection.
    key = new_key()
    handle = raw.request(Command.SUBMIT_JOB, function, key, b"", reply=Command.JOB_CREATED).args[0]
    job = ForegroundJob(raw, handle, key)
    assert worker.grab().args[0] == handle
    worker.conn.send(Command.WORK_EXCEPTION, handle, b"ValueError: again")
    assert collect(job) == [WorkEvent("failed", handle)]
    job.close()
    assert not raw.connected


def test_foreground_job_receives_every_work_packet(address, client, raw_workers):
    function, key = new_function(), new_key()
    parked = linger.parked_count()
    job = client.foreground(address, function, key, b"input")
    worker = raw_workers(address, function)
    handle, _, unique, data = worker.grab().args
    assert (handle, unique, data) == (job.handle, key, b"input")
    for command, *args in [
        (Command.WORK_STATUS, 1, 3),
        (Command.WORK_DATA, b"part\0ial"),
        (Command.WORK_WARNING, b"careful"),
        (Command.WORK_STATUS, 3, 3),
        (Command.WORK_COMPLETE, b'{"answer": 42}'),
    ]:
        worker.conn.send(command, handle, *args)
    assert collect(job) == [
        WorkEvent("status", handle, numerator=1, denominator=3),
        WorkEvent("data", handle, b"part\0ial"),
        WorkEvent("warning", handle, b"careful"),
        WorkEvent("status", handle, numerator=3, denominator=3),
        WorkEvent("complete", handle, b'{"answer": 42}'),
    ]
    assert job.finished
    job.close()
    # A finished job's connection is not parked: it serves the thread's next attachment.
    assert linger.parked_count() == parked
    again = client.follow(address, function, new_key(), b"")
    assert again.conn is job.conn
    again.abandon()


def test_foreground_attaches_to_a_background_job_and_sees_only_later_events(
    address, client, raw_workers
):
    function, key = new_function(), new_key()
    handle = client.submit_background(address, function, key, b"first")
    worker = raw_workers(address, function)
    assert worker.grab().args == (handle, function.encode(), key, b"first")
    worker.conn.send(Command.WORK_DATA, handle, b"before")
    worker.settle()  # gearmand has "before" before the foreground client joins
    # The first submitter's data wins; earlier WORK_DATA is not replayed.
    with client.foreground(address, function, key, b"ignored") as job:
        assert job.handle == handle
        wait_until(lambda: client.status_unique(address, key).clients == 1)
        worker.conn.send(Command.WORK_DATA, handle, b"after")
        worker.conn.send(Command.WORK_COMPLETE, handle, b"ok")
        assert collect(job) == [
            WorkEvent("data", handle, b"after"),
            WorkEvent("complete", handle, b"ok"),
        ]


def test_work_exception_reaches_only_a_client_that_asked_for_exceptions(
    address, client, raw_workers
):
    function, key = new_function(), new_key()
    with client.foreground(address, function, key, b"") as asked:
        plain = Connection(address, timeout=TIMEOUT)
        joined = plain.request(Command.SUBMIT_JOB, function, key, b"", reply=Command.JOB_CREATED)
        assert joined.args[0] == asked.handle
        worker = raw_workers(address, function)
        handle = worker.grab().args[0]
        worker.conn.send(Command.WORK_EXCEPTION, handle, b"ValueError: boom")
        assert collect(asked) == [WorkEvent("exception", handle, b"ValueError: boom")]
        not_asked = ForegroundJob(plain, handle, key)
        assert collect(not_asked) == [WorkEvent("failed", handle)]
        not_asked.close()


def test_foreground_job_raises_connection_failed_when_gearmand_goes_away(
    gearmand, address, client
):
    job = client.foreground(address, new_function(), new_key(), b"")
    gearmand.stop()
    with pytest.raises(ConnectionFailed, match="server closed the connection"):
        collect(job)
    assert not job.conn.connected
    with pytest.raises(ConnectionFailed, match="cannot connect"):
        client.echo(address)
