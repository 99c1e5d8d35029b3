"""The asyncio worker connection (``gearman/aioworker.py``) against a real gearmand:
many jobs held on one connection, reported out of order, from the loop's thread and
from others; NO_JOB, and the NOOP that ends a sleep."""

from __future__ import annotations

import asyncio
import threading

from django_gearattach.gearman.aioworker import AsyncWorkerConnection
from django_gearattach.gearman.protocol import Command
from tests.rawgearman import TIMEOUT, new_function, new_key


async def test_one_connection_holds_many_jobs_and_reports_them_in_any_order(address, client):
    function = new_function()
    keys = [new_key() for _ in range(5)]
    followers = [client.foreground(address, function, key, key) for key in keys]
    conn = AsyncWorkerConnection(address, [function], TIMEOUT)
    await conn.connect()
    try:
        held = [await conn.grab() for _ in keys]
        assert sorted(j.unique for j in held) == sorted(keys)  # all five at once
        assert await conn.grab() is None  # NO_JOB
        # Reported in reverse order, one of them from another thread.
        for job in reversed(held[1:]):
            job.send(Command.WORK_COMPLETE, b"done " + job.unique)
        other = threading.Thread(target=held[0].send, args=(Command.WORK_COMPLETE, b"late"))
        other.start()
        other.join()
        results = {}
        for key, follower in zip(keys, followers, strict=True):
            event = await asyncio.to_thread(follower.next_event, TIMEOUT)
            while event is not None and not event.terminal:
                event = await asyncio.to_thread(follower.next_event, TIMEOUT)
            assert event is not None
            results[key] = event.data
        assert results[held[0].unique] == b"late"
        assert all(results[j.unique] == b"done " + j.unique for j in held[1:])
    finally:
        await conn.close()
        for follower in followers:
            follower.close()


async def test_a_sleeping_connection_wakes_when_a_job_comes(address, client):
    function = new_function()
    conn = AsyncWorkerConnection(address, [function], TIMEOUT)
    await conn.connect()
    try:
        assert await conn.grab() is None
        sleeping = asyncio.create_task(conn.sleep(TIMEOUT))
        await asyncio.sleep(0.1)
        assert not sleeping.done()
        key = new_key()
        await asyncio.to_thread(client.submit_background, address, function, key, b"x")
        await asyncio.wait_for(sleeping, TIMEOUT)  # the NOOP, long before the timeout
        job = await conn.grab()
        assert job is not None
        assert job.unique == key
        job.send(Command.WORK_COMPLETE, b"")
    finally:
        await conn.close()
    assert not conn.connected
    job.send(Command.WORK_COMPLETE, b"")  # after the close: dropped, no error
