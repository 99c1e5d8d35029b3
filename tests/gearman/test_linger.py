"""The abandoned-job trap, and how the clients keep it closed (real gearmand, no Django).

gearmand drops a job that has not started when its last foreground client leaves.
Attachers follow queued jobs in the foreground (that is how they hear a job start),
so each way an attacher can leave is tested here: it gives up (sync: its connection
is parked), its asyncio connection is closed, or its event loop ends (async: the
attachments are handed to a parked blocking connection first).
"""

from __future__ import annotations

import asyncio
import threading

from django_gearattach.gearman import linger
from django_gearattach.gearman.aio import AsyncConnection
from django_gearattach.gearman.client import WorkEvent, event_from_packet
from django_gearattach.gearman.connection import Connection, admin_command
from django_gearattach.gearman.protocol import Command, Packet, encode, parse_status
from tests.helpers import wait_until
from tests.rawgearman import TIMEOUT, new_function, new_key


def test_the_abandoned_job_trap_on_raw_gearmand(address, client, raw_workers):
    """Why a foreground attachment to a queued job must never just be closed.

    A foreground client attaches to a queued background job and leaves: gearmand
    frees the job the next time a worker asks for work, and it never runs.
    """
    function, key = new_function(), new_key()
    handle = client.submit_background(address, function, key, b"precious")
    attacher = Connection(address, timeout=TIMEOUT)
    created = attacher.request(Command.SUBMIT_JOB, function, key, b"", reply=Command.JOB_CREATED)
    assert created.args[0] == handle
    assert client.status_unique(address, key).clients == 1
    attacher.close()
    wait_until(lambda: client.status_unique(address, key).clients == 0)
    assert client.status_unique(address, key).known  # still looks queued...

    worker = raw_workers(address, function)
    assert worker.grab_once().command is Command.NO_JOB  # ...but it is gone.
    assert not client.status_unique(address, key).known
    (row,) = [s for s in parse_status(admin_command(address, "status")) if s.function == function]
    assert (row.queued, row.running, row.workers) == (0, 0, 1)


def test_the_trap_also_drops_a_requeued_job_whose_attacher_left_while_it_ran(
    address, client, raw_workers
):
    """Leaving a running job is safe only while its worker lives (the recovery sweep's case)."""
    function, key = new_function(), new_key()
    client.submit_background(address, function, key, b"precious")
    attacher = Connection(address, timeout=TIMEOUT)
    attacher.request(Command.SUBMIT_JOB, function, key, b"", reply=Command.JOB_CREATED)
    first = raw_workers(address, function)
    first.grab()
    attacher.close()
    wait_until(lambda: client.status_unique(address, key).clients == 0)
    first.close()  # the worker dies: gearmand requeues the job...
    wait_until(lambda: not client.status_unique(address, key).running)
    assert raw_workers(address, function).grab_once().command is Command.NO_JOB  # ...and drops it
    assert not client.status_unique(address, key).known


def test_an_empty_work_data_is_the_start_signal():
    started = Packet(Command.WORK_DATA, (b"H:1", b""))
    data = Packet(Command.WORK_DATA, (b"H:1", b"null"))
    assert event_from_packet(started) == WorkEvent("started", b"H:1")
    assert event_from_packet(data) == WorkEvent("data", b"H:1", b"null")


def test_follow_tells_in_one_round_trip_whether_it_joined_a_known_job(address, client):
    function, key = new_function(), new_key()
    handle = client.submit_background(address, function, key, b"precious")
    joined = client.follow(address, function, key, b"marker")
    assert joined.handle == handle
    assert joined.status is not None
    assert (joined.status.known, joined.status.running) == (True, False)
    assert not joined.started
    fresh = client.follow(address, function, new_key(), b"marker")
    assert fresh.status is not None
    assert not fresh.status.known
    fresh.abandon()  # a marker job of our own, carrying no work: dropped, never parked
    joined.close()  # queued: parked
    assert joined.conn.connected


def test_linger_keeps_a_queued_job_until_a_worker_starts_it(
    address, client, raw_workers, monkeypatch
):
    monkeypatch.setattr(linger, "CHECK_INTERVAL", 0.05)
    function, key = new_function(), new_key()
    parked = linger.parked_count()
    handle = client.submit_background(address, function, key, b"precious")
    job = client.foreground(address, function, key, b"")
    assert job.handle == handle
    job.close()  # gives up while the job is still queued: must park, not close
    assert job.conn.connected
    assert linger.parked_count() == parked + 1
    # Several status checks later it is still queued, so still parked and attached.
    wait_until(lambda: client.status_unique(address, key).clients == 1)
    threading.Event().wait(10 * linger.CHECK_INTERVAL)
    assert linger.parked_count() == parked + 1
    assert client.status_unique(address, key).clients == 1

    # A worker that sends nothing at start (a foreign one): the status check lets go.
    worker = raw_workers(address, function)
    assert worker.grab().args == (handle, function.encode(), key, b"precious")
    wait_until(lambda: linger.parked_count() == parked)
    assert not job.conn.connected
    status = client.status_unique(address, key)
    assert (status.known, status.running, status.clients) == (True, True, 0)
    worker.conn.send(Command.WORK_COMPLETE, handle, b"ran")
    wait_until(lambda: not client.status_unique(address, key).known)


def test_linger_lets_go_the_moment_the_start_signal_arrives(
    address, client, raw_workers, monkeypatch
):
    monkeypatch.setattr(linger, "CHECK_INTERVAL", 3600.0)  # only the push can release it
    function, key = new_function(), new_key()
    parked = linger.parked_count()
    client.submit_background(address, function, key, b"precious")
    job = client.foreground(address, function, key, b"")
    job.close()
    assert linger.parked_count() == parked + 1
    worker = raw_workers(address, function)
    handle = worker.grab().args[0]
    worker.conn.send(Command.WORK_DATA, handle, b"")
    wait_until(lambda: linger.parked_count() == parked)
    assert not job.conn.connected
    worker.conn.send(Command.WORK_COMPLETE, handle, b"ran")


def test_closing_a_foreground_job_whose_connection_is_gone_parks_nothing(address, client):
    job = client.foreground(address, new_function(), new_key(), b"")
    job.conn.close()
    parked = linger.parked_count()
    job.close()
    assert linger.parked_count() == parked


async def test_async_connection_closed_while_attached_to_a_queued_job_hands_it_to_linger(
    address, client, raw_workers
):
    conn = AsyncConnection(address, timeout=TIMEOUT)
    function, key = new_function(), new_key()
    parked = linger.parked_count()
    handle = client.submit_background(address, function, key, b"precious")
    follow = await conn.follow(function, key, b"marker")
    assert follow.status is not None
    assert follow.status.known
    assert not follow.started
    follow.leave()
    await conn.close()
    # The parked blocking connection joined the job before the async one left.
    assert linger.parked_count() == parked + 1
    wait_until(lambda: client.status_unique(address, key).clients == 1)
    worker = raw_workers(address, function)
    assigned = await asyncio.to_thread(worker.grab)
    assert assigned.args == (handle, function.encode(), key, b"precious")
    worker.conn.send(Command.WORK_DATA, handle, b"")
    await asyncio.to_thread(wait_until, lambda: linger.parked_count() == parked)


def test_an_event_loop_that_ends_while_following_queued_jobs_never_drops_them(
    address, client, raw_workers
):
    """``asyncio.run`` cancels the connection's reader at shutdown: the hand-off runs then."""
    function = new_function()
    keys = [new_key() for _ in range(3)]
    handles = [client.submit_background(address, function, key, b"precious") for key in keys]

    async def follow_then_return() -> None:
        conn = AsyncConnection(address, timeout=TIMEOUT)
        for key in keys:
            follow = await conn.follow(function, key, b"marker")
            follow.leave()
        assert conn.attachment_count() == 3  # never closed by this code

    asyncio.run(follow_then_return())
    wait_until(lambda: [client.status_unique(address, k).clients for k in keys] == [1, 1, 1])
    worker = raw_workers(address, function)
    for handle, key in zip(handles, keys, strict=True):
        assert worker.grab().args == (handle, function.encode(), key, b"precious")
        worker.conn.send(Command.WORK_COMPLETE, handle, b"ran")


def test_adopt_of_a_job_that_ended_meanwhile_parks_a_marker_a_worker_ends(
    address, client, raw_workers
):
    function, key = new_function(), new_key()
    parked = linger.parked_count()
    linger.adopt(address, [(function, key, b"marker", "normal")], TIMEOUT)
    assert linger.parked_count() == parked + 1
    worker = raw_workers(address, function)
    handle, _, _, data = worker.grab().args
    assert data == b"marker"  # a worker of this app answers a marker from the record
    worker.conn.send_bytes(encode(Command.WORK_COMPLETE, handle, b"stored"))
    wait_until(lambda: linger.parked_count() == parked)
