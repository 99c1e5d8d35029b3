"""The asyncio client (``gearman/aio.py``) against real gearmand processes.

Workers here are raw connections driven packet by packet, so each test
decides exactly what gearmand sees and when.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from django_gearattach.gearman.aio import AsyncClient, AsyncConnection
from django_gearattach.gearman.client import (
    UniqueStatus,
    WorkEvent,
)
from django_gearattach.gearman.errors import ConnectionFailed
from django_gearattach.gearman.protocol import Command
from django_gearattach.gearman.rendezvous import Address
from tests.rawgearman import TIMEOUT, new_function, new_key


async def _drain(events):
    return [event async for event in events]


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
