"""The protocol layer against real gearmand processes (no Django database involved).

Workers here are raw :class:`Connection` objects driven packet by packet, so each test
decides exactly what gearmand sees and when.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time

import pytest

from django_gearattach.gearman import linger
from django_gearattach.gearman.aio import AsyncClient, AsyncConnection
from django_gearattach.gearman.client import (
    Client,
    ForegroundJob,
    UniqueStatus,
    WorkEvent,
    event_from_packet,
)
from django_gearattach.gearman.connection import Connection, admin_command
from django_gearattach.gearman.errors import ConnectionFailed, ProtocolError, ServerError
from django_gearattach.gearman.protocol import Command, Packet, parse_status
from django_gearattach.gearman.routing import Address
from django_gearattach.gearman.worker import WorkerPool
from django_gearattach.testing import Gearmand
from tests.helpers import wait_until
from tests.rawgearman import TIMEOUT, RawWorker, collect, new_function, new_key


@pytest.fixture
def address(gearmand: Gearmand) -> Address:
    return Address.parse(gearmand.address)


@pytest.fixture
def client():
    client = Client(timeout=TIMEOUT)
    yield client
    client.close()


@pytest.fixture
def raw_workers():
    started: list[RawWorker] = []

    def start(address: Address, *functions: str) -> RawWorker:
        worker = RawWorker(address, *functions)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.close()


async def _drain(events):
    return [event async for event in events]


# -- blocking Client -------------------------------------------------------------------


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


# -- WorkerPool ------------------------------------------------------------------------


def test_worker_pool_grabs_from_two_servers_and_reconnects_after_a_restart(
    gearmand_factory, client
):
    first, second = gearmand_factory(), gearmand_factory()
    a1, a2 = Address.parse(first.address), Address.parse(second.address)
    function = new_function()
    submitted = {}
    for address in (a1, a2, a1, a2):
        key = new_key()
        client.submit_background(address, function, key, key)
        submitted[key] = address

    pool = WorkerPool([a1, a2], [function], timeout=TIMEOUT)
    try:
        grabbed: dict[bytes, Address] = {}
        deadline = time.monotonic() + TIMEOUT
        while len(grabbed) < len(submitted) and time.monotonic() < deadline:
            job = pool.grab(wait=0.2)
            if job is None:
                continue
            assert job.function == function
            assert job.data == job.unique
            grabbed[job.unique] = job.server
            job.send(Command.WORK_COMPLETE, b"ok")
        assert grabbed == submitted
        assert sorted(pool.connected_servers()) == sorted([a1, a2])

        first.restart()
        # The pool's connection to the first server is dead; a job on the restarted
        # server must still be picked up, without restarting the pool.
        key = new_key()
        fresh = Client(timeout=TIMEOUT)
        try:
            fresh.submit_background(a1, function, key, b"after restart")
        finally:
            fresh.close()
        deadline = time.monotonic() + 3 * TIMEOUT
        job = None
        while job is None and time.monotonic() < deadline:
            job = pool.grab(wait=0.2)
        assert job is not None, "the pool never reconnected to the restarted gearmand"
        assert (job.unique, job.server, job.data) == (key, a1, b"after restart")
        job.send(Command.WORK_COMPLETE, b"ok")
        assert sorted(pool.connected_servers()) == sorted([a1, a2])
        (row,) = [s for s in parse_status(admin_command(a1, "status")) if s.function == function]
        assert row.workers == 1
    finally:
        pool.close()


def test_grab_ahead_holds_two_jobs_and_a_dropped_connection_requeues_both(address, client):
    """What the worker's one-commit-per-job path relies on (worker.py, _conclude)."""
    function = new_function()
    keys = [new_key(), new_key()]
    for key in keys:
        client.submit_background(address, function, key, key)
    watcher = client.foreground(address, function, keys[0], b"ignored")  # attach to the first

    pool = WorkerPool([address], [function], timeout=TIMEOUT)
    try:
        first = pool.grab(wait=1.0)
        assert first is not None
        second = pool.grab_ahead()  # asked before the first job is reported
        assert second is not None
        assert {first.unique, second.unique} == set(keys)
        assert pool.grab_ahead() is None  # NO_JOB: nothing left, and nothing waited for
        status = parse_status(admin_command(address, "status"))
        (row,) = [s for s in status if s.function == function]
        assert (row.queued, row.running) == (2, 2)  # gearmand lets one worker hold both
    finally:
        pool.close()  # dies holding both jobs, reporting neither

    replacement = WorkerPool([address], [function], timeout=TIMEOUT)
    try:
        again: set[bytes] = set()
        deadline = time.monotonic() + TIMEOUT
        while len(again) < 2 and time.monotonic() < deadline:
            job = replacement.grab(wait=0.2)
            if job is not None:
                again.add(job.unique)
                job.send(Command.WORK_COMPLETE, job.unique)
        assert again == set(keys)
        with watcher:
            events = [e for e in watcher.events(poll=0.2) if e is not None]
        assert [(e.kind, e.data) for e in events][-1] == ("complete", keys[0])
    finally:
        replacement.close()


def test_grab_ahead_never_connects_it_only_asks_a_server_already_registered(
    gearmand_factory, client
):
    """A finished job's report waits on grab_ahead: it must not wait on a connect."""
    assert WorkerPool([], ["f"], timeout=TIMEOUT).grab_ahead() is None
    first, second = gearmand_factory(), gearmand_factory()
    a1, a2 = Address.parse(first.address), Address.parse(second.address)
    function = new_function()
    client.submit_background(a1, function, new_key(), b"")
    client.submit_background(a2, function, new_key(), b"")
    pool = WorkerPool([a1, a2], [function], timeout=TIMEOUT)
    try:
        assert pool.grab(wait=1.0) is not None  # from the first server; the second is next
        assert pool.grab_ahead() is None  # the second was never connected: not asked
        assert pool.connected_servers() == [a1]
        job = pool.grab(wait=1.0)  # grab() connects it
        assert job is not None
        assert job.server == a2
    finally:
        pool.close()


def _stopped(pid: int) -> bool:
    """Every thread of ``pid`` is stopped (SIGSTOP takes effect asynchronously)."""
    states = []
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/stat") as stat:
            states.append(stat.read().rsplit(")", 1)[1].split()[0])
    return all(state in ("T", "t") for state in states)


def test_grab_ahead_gives_up_on_a_server_that_stops_answering(
    gearmand_factory, client, monkeypatch
):
    monkeypatch.setattr("django_gearattach.gearman.worker.AHEAD_WAIT", 0.3)
    live, stalled = gearmand_factory(), gearmand_factory()
    a1, a2 = Address.parse(live.address), Address.parse(stalled.address)
    function = new_function()
    pool = WorkerPool([a1, a2], [function], timeout=TIMEOUT)
    try:
        assert pool.grab(wait=0.1) is None  # registers on both (NO_JOB from each)
        assert sorted(pool.connected_servers()) == sorted([a1, a2])
        client.submit_background(a1, function, new_key(), b"")
        assert pool.grab(wait=1.0) is not None  # from the live server; the stalled is next
        assert stalled.process is not None
        os.kill(stalled.process.pid, signal.SIGSTOP)  # accepts, never answers
        try:
            wait_until(lambda: _stopped(stalled.process.pid), 5, "gearmand to stop")
            started = time.monotonic()
            assert pool.grab_ahead() is None
            waited = time.monotonic() - started
        finally:
            os.kill(stalled.process.pid, signal.SIGCONT)
        assert waited < 2.0, f"waited {waited:.2f} s, not AHEAD_WAIT (0.3 s)"
        assert pool.connected_servers() == [a1]  # dropped; grab() reconnects after backoff
    finally:
        pool.close()


# -- AsyncConnection -------------------------------------------------------------------


async def test_async_concurrent_requests_on_one_connection_get_their_own_replies(
    address, raw_workers
):
    conn = AsyncConnection(address, timeout=TIMEOUT)
    function = new_function()
    keys = [new_key() for _ in range(60)]
    early = new_key()
    try:
        # Submitted first, so that its status below is certain to be "known".
        early_handle = await conn.submit_background(function, early, b"data-" + early)
        results = await asyncio.gather(
            *(conn.submit_background(function, key, b"data-" + key) for key in keys),
            *(conn.echo(b"echo-%d" % i) for i in range(20)),
            conn.status_unique(early),
            conn.status_unique(b"never-submitted"),
        )
        handles = dict(zip(keys, results[: len(keys)], strict=True))
        echoes = results[len(keys) : len(keys) + 20]
        assert echoes == [b"echo-%d" % i for i in range(20)]
        assert len({early_handle, *handles.values()}) == len(keys) + 1
        known, unknown = results[-2], results[-1]
        assert isinstance(known, UniqueStatus)
        assert isinstance(unknown, UniqueStatus)
        assert (known.unique, known.known) == (early, True)
        assert (unknown.unique, unknown.known) == (b"never-submitted", False)
        handles[early] = early_handle

        # The worker sees which handle gearmand gave which unique: each submit got its own.
        worker = raw_workers(address, function)
        assigned = {}
        for _ in handles:
            handle, _, unique, data = await asyncio.to_thread(lambda: worker.grab().args)
            assert data == b"data-" + unique
            assigned[unique] = handle
        assert assigned == handles
    finally:
        await conn.close()


async def test_async_foregrounds_of_one_job_share_one_gearmand_attachment(address, raw_workers):
    conn = AsyncConnection(address, timeout=TIMEOUT)
    function, key = new_function(), new_key()
    try:
        async with (
            conn.foreground(function, key, b"first") as one,
            conn.foreground(function, key, b"second") as two,
        ):
            assert conn.attachment_count() == 1
            # gearmand counts one foreground client; two submits would count 2
            # and every packet would then arrive twice.
            assert (await conn.status_unique(key)).clients == 1

            worker = raw_workers(address, function)
            handle, _, _, data = await asyncio.to_thread(lambda: worker.grab().args)
            assert data == b"first"
            for command, *args in [
                (Command.WORK_STATUS, 1, 2),
                (Command.WORK_DATA, b"chunk"),
                (Command.WORK_WARNING, b"careful"),
                (Command.WORK_STATUS, 2, 2),
                (Command.WORK_COMPLETE, b"result"),
            ]:
                worker.conn.send(command, handle, *args)

            got_one, got_two = await asyncio.wait_for(
                asyncio.gather(_drain(one), _drain(two)), TIMEOUT
            )
        expected = [
            WorkEvent("status", handle, numerator=1, denominator=2),
            WorkEvent("data", handle, b"chunk"),
            WorkEvent("warning", handle, b"careful"),
            WorkEvent("status", handle, numerator=2, denominator=2),
            WorkEvent("complete", handle, b"result"),
        ]
        assert got_one == expected
        assert got_two == expected
        assert conn.attachment_count() == 0
    finally:
        await conn.close()


async def test_async_leaving_a_foreground_early_never_drops_the_queued_job(
    address, client, raw_workers
):
    conn = AsyncConnection(address, timeout=TIMEOUT)
    function, key = new_function(), new_key()
    try:
        handle = client.submit_background(address, function, key, b"precious")
        async with conn.foreground(function, key, b"") as _events:
            assert conn.attachment_count() == 1
        # Left while queued: the attachment stays on the connection until the job ends.
        assert conn.attachment_count() == 1
        assert (await conn.status_unique(key)).clients == 1
        worker = raw_workers(address, function)
        assigned = await asyncio.to_thread(worker.grab)
        assert assigned.args == (handle, function.encode(), key, b"precious")
        worker.conn.send(Command.WORK_COMPLETE, handle, b"ok")
        deadline = time.monotonic() + TIMEOUT
        while conn.attachment_count() and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        assert conn.attachment_count() == 0
    finally:
        await conn.close()


async def test_async_work_exception_reaches_the_async_client(address, raw_workers):
    conn = AsyncConnection(address, timeout=TIMEOUT)
    function, key = new_function(), new_key()
    try:
        async with conn.foreground(function, key, b"") as events:
            worker = raw_workers(address, function)
            handle = (await asyncio.to_thread(worker.grab)).args[0]
            worker.conn.send(Command.WORK_EXCEPTION, handle, b"ValueError: boom")
            got = await asyncio.wait_for(_drain(events), TIMEOUT)
        assert got == [WorkEvent("exception", handle, b"ValueError: boom")]
    finally:
        await conn.close()


async def test_async_connection_loss_raises_connection_failed_in_every_iterator(gearmand, address):
    conn = AsyncConnection(address, timeout=TIMEOUT)
    function = new_function()
    try:
        async with (
            conn.foreground(function, new_key(), b"") as one,
            conn.foreground(function, new_key(), b"") as two,
        ):
            assert conn.attachment_count() == 2
            await asyncio.to_thread(gearmand.stop)
            for events in (one, two):
                with pytest.raises(ConnectionFailed, match="server closed the connection"):
                    await asyncio.wait_for(_drain(events), TIMEOUT)
        assert not conn.connected
        assert conn.attachment_count() == 0
        with pytest.raises(ConnectionFailed, match="cannot connect"):
            await conn.echo()
    finally:
        await conn.close()


async def test_async_client_keeps_one_connection_per_server(gearmand_factory):
    first, second = gearmand_factory(), gearmand_factory()
    a1, a2 = Address.parse(first.address), Address.parse(second.address)
    client = AsyncClient(timeout=TIMEOUT)
    assert client.connection(a1) is client.connection(a1)
    assert client.connection(a1) is not client.connection(a2)
    assert await client.connection(a1).echo(b"one") == b"one"
    assert await client.connection(a2).echo(b"two") == b"two"
    assert {c.address for c in client.connections()} == {a1, a2}
    await client.close()
    assert client.connections() == []


# -- admin protocol --------------------------------------------------------------------


def test_admin_status_version_and_getpid(gearmand, address, client, raw_workers):
    function = new_function()
    raw_workers(address, function)
    client.submit_background(address, function, new_key(), b"")
    client.submit_background(address, function, new_key(), b"")

    def row():
        rows = parse_status(admin_command(address, "status"))
        mine = [s for s in rows if s.function == function]
        return mine[0] if mine and mine[0].workers == 1 else None

    status = wait_until(row)
    assert (status.queued, status.running, status.workers) == (2, 0, 1)

    (version,) = admin_command(address, "version")
    assert version.startswith("OK 1.1.")
    assert admin_command(address, "getpid") == [f"OK {gearmand.pid}"]


def test_admin_unknown_command_raises_protocol_error(address):
    with pytest.raises(ProtocolError, match="ERR UNKNOWN_COMMAND"):
        admin_command(address, "no-such-command")


def test_admin_cancel_job_reply_is_a_clean_line(address, client):
    # The docstring lists "cancel job" among the one-line replies; gearmand ends that
    # reply with CRLF, which must not leak into the returned line.
    handle = client.submit_background(address, new_function(), new_key(), b"")
    assert admin_command(address, f"cancel job {handle.decode()}") == ["OK"]


def test_admin_command_on_a_closed_port_raises_connection_failed(gearmand, address):
    gearmand.stop()
    with pytest.raises(ConnectionFailed, match="cannot connect"):
        admin_command(address, "status", timeout=1.0)
