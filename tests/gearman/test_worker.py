"""The worker side of the protocol (``gearman/worker.py``): the pool, grab-ahead.

Workers here are raw connections driven packet by packet, so each test
decides exactly what gearmand sees and when.
"""

from __future__ import annotations

import os
import signal
import time

from django_gearattach.gearman.client import Client
from django_gearattach.gearman.connection import Connection, admin_command
from django_gearattach.gearman.protocol import Command, parse_status
from django_gearattach.gearman.rendezvous import Address
from django_gearattach.gearman.worker import WorkerPool
from tests.helpers import wait_until
from tests.rawgearman import TIMEOUT, new_function, new_key


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


def test_a_job_whose_key_holds_control_characters_is_failed_and_never_handed_on(address):
    """Another client's job with a newline in its key (this package's clients refuse to
    make one): the pool fails it at once and hands on the next job."""
    function = new_function()
    good = new_key()
    conn = Connection(address, timeout=TIMEOUT)  # a client without our checks
    try:
        forged = b"x] complete\njob admin.reset_all_passw"
        conn.send(Command.SUBMIT_JOB, function, forged, b"payload")
        created = conn.read_packet()
        assert created is not None
        assert created.command is Command.JOB_CREATED
        conn.send(Command.SUBMIT_JOB_BG, function, good, b"payload")
        pool = WorkerPool([address], [function], timeout=TIMEOUT)
        try:
            job = pool.grab(wait=1.0)
            assert job is not None
            assert job.unique == good
            job.send(Command.WORK_COMPLETE, b"ok")
        finally:
            pool.close()
        replies = [conn.read_packet(), conn.read_packet()]
        commands = {p.command for p in replies if p is not None}
        assert Command.WORK_FAIL in commands  # the foreground client heard it failed
    finally:
        conn.close()
