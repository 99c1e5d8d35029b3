"""Long-lived answers within bounds: no thread or connection held, limits, a maximum age.

The first test serves the suite's ASGI application with uvicorn and opens real SSE
streams and long-polls against it, counting the server's threads and database
connections (finding 3 of the security review: 100 streams held 100 of each).
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import User
from django.db import connection
from django.test import AsyncClient, Client

from django_gearattach import submit
from django_gearattach.models import Job, Status
from django_gearattach.testing import Gearmand, free_port, wait_for_port
from django_gearattach.web.streams import Registry, StreamLimitReached
from django_gearattach.web.tokens import Identity, make_token
from tests.asgi import application

pytest_plugins = ["tests.webfixtures"]

ROOT = Path(__file__).resolve().parents[2]
APP_NAME = "gearattach-streams-test"


# -- the registry -----------------------------------------------------------------------
def test_limits_per_client_and_per_process(settings) -> None:
    settings.GEARATTACH = {
        **settings.GEARATTACH,
        "STREAM_LIMIT_PER_CLIENT": 2,
        "STREAM_LIMIT_PER_PROCESS": 3,
    }
    registry = Registry()
    first, second = registry.open("alice"), registry.open("alice")
    with pytest.raises(StreamLimitReached, match="at most 2"):
        registry.open("alice")
    third = registry.open("bob")
    with pytest.raises(StreamLimitReached, match="as many jobs as it may"):
        registry.open("carol")
    first.release()
    first.release()  # twice: counted once
    assert registry.total == 2
    registry.open("carol")
    for slot in (second, third):
        slot.release()
    assert dict(registry.per_client) == {"carol": 1}


def test_zero_means_no_limit(settings) -> None:
    settings.GEARATTACH = {**settings.GEARATTACH, "STREAM_LIMIT_PER_CLIENT": 0}
    registry = Registry()
    slots = [registry.open("alice") for _ in range(100)]
    assert registry.total == 100
    assert all(not s.released for s in slots)


# -- over HTTP and websockets, in process ---------------------------------------------------
@pytest.fixture
def queued(cluster, transactional_db, settings) -> Job:
    """A job that stays queued: no worker runs its function."""
    nobody(settings)
    return submit("tests.nobody", key="stuck")


def nobody(settings) -> None:
    """Let this process submit "tests.nobody", which nothing defines or runs."""
    settings.GEARATTACH = {**settings.GEARATTACH, "EXTERNAL_TASKS": ["tests.nobody"]}


#: What a follower of the queued job hears first: no worker runs "tests.nobody".
UNSERVED = {"type": "unserved", "function": "tests.nobody"}


def limited(settings, **values: object) -> None:
    settings.GEARATTACH = {**settings.GEARATTACH, **values}


@pytest.mark.usefixtures("hub")
async def test_over_the_client_limit_streams_get_429(
    async_client: AsyncClient, queued: Job, settings
) -> None:
    limited(settings, STREAM_LIMIT_PER_CLIENT=2)
    token = make_token(queued.function, queued.key, None)
    events = f"/gearattach/jobs/{token}/events/"
    first, second = await async_client.get(events), await async_client.get(events)
    assert first.status_code == second.status_code == 200
    refused = await async_client.get(events)
    assert refused.status_code == 429
    assert refused["Retry-After"] == "5"
    assert "too many open streams" in refused.json()["error"]
    poll = await async_client.get(f"/gearattach/jobs/{token}/poll/", {"timeout": "0"})
    assert poll.status_code == 429
    # A websocket from the same address counts against the same limit.
    socket = WebsocketCommunicator(application, f"/ws/gearattach/{token}/")
    socket.scope["client"] = ("127.0.0.1", 50000)
    assert (await socket.connect(timeout=5))[0]
    assert "too many open streams" in json.loads(await socket.receive_from(5))["error"]
    assert (await socket.receive_output(5)) == {"type": "websocket.close", "code": 4429}
    # Streams that end (or are dropped unread) give their places back.
    del first, second
    gc.collect()
    again = await async_client.get(events)
    assert again.status_code == 200


@pytest.mark.usefixtures("hub")
async def test_streams_end_at_their_maximum_age_with_reconnect(
    async_client: AsyncClient, queued: Job, settings
) -> None:
    limited(settings, STREAM_MAX_AGE=0.5)
    token = make_token(queued.function, queued.key, None)
    response = await async_client.get(f"/gearattach/jobs/{token}/events/")
    chunks = [
        chunk.decode() if isinstance(chunk, bytes) else chunk
        async for chunk in response.streaming_content  # type: ignore[attr-defined]
    ]
    assert chunks[0] == "retry: 2000\n\n"
    assert chunks[-1] == 'data: {"type":"reconnect"}\n\n'
    socket = WebsocketCommunicator(application, f"/ws/gearattach/{token}/")
    assert (await socket.connect(timeout=5))[0]
    assert json.loads(await socket.receive_from(5)) == UNSERVED  # no worker runs it
    assert json.loads(await socket.receive_from(5)) == {"type": "reconnect"}
    assert (await socket.receive_output(5)) == {"type": "websocket.close", "code": 1000}
    # Still queued: the stream's age ended the stream, not the job.
    assert (await Job.objects.aget(pk=queued.pk)).status == Status.QUEUED


@pytest.mark.usefixtures("hub")
async def test_a_stream_outlives_a_logout_by_its_maximum_age_at_most(
    queued: Job, settings
) -> None:
    limited(settings, STREAM_MAX_AGE=0.5)

    def sign_in() -> tuple[Client, bytes, int]:
        user = User.objects.create_user("leaving", password="pw")
        client = Client()
        client.force_login(user)
        return client, f"sessionid={client.session.session_key}".encode(), user.pk

    client, cookie, user_id = await sync_to_async(sign_in)()
    token = make_token(queued.function, queued.key, Identity(user_id=user_id))
    path = f"/ws/gearattach/{token}/"
    socket = WebsocketCommunicator(application, path, [(b"cookie", cookie)])
    assert (await socket.connect(timeout=5))[0]
    await sync_to_async(client.logout)()
    assert json.loads(await socket.receive_from(5)) == UNSERVED
    assert json.loads(await socket.receive_from(5)) == {"type": "reconnect"}
    assert (await socket.receive_output(5)) == {"type": "websocket.close", "code": 1000}
    again = WebsocketCommunicator(application, path, [(b"cookie", cookie)])
    assert (await again.connect(timeout=5))[0]
    assert (await again.receive_output(5)) == {"type": "websocket.close", "code": 4403}


# -- a real server: what a waiting stream holds -------------------------------------------
@pytest.fixture
def server(transactional_db: None) -> Iterator[tuple[int, int, str]]:
    """uvicorn serving tests.asgi on the test database, with gearmand: (port, pid, db)."""
    with Gearmand() as gearmand:
        name = str(connection.settings_dict["NAME"])
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "tests.settings",
            "GEARATTACH_TEST_DATABASE": name,
            "GEARATTACH_SERVERS": gearmand.address,
            "PGAPPNAME": APP_NAME,
        }
        port = free_port()
        process = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "tests.asgi:application", "--port", str(port)],
            env=env,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_for_port(port, timeout=30, process=process)
            yield port, process.pid, gearmand.address
        finally:
            process.terminate()
            process.wait(15)


def threads(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


def database_connections(pid: int) -> int | None:
    """The server's open connections to the test database (PostgreSQL only).

    SQLite cannot be counted from outside: its unix VFS keeps a closed connection's
    file descriptor open while another connection of the process (the hub's) holds a
    lock on the file, so open descriptors are not open connections.
    """
    if connection.vendor != "postgresql":
        return None
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", [APP_NAME]
        )
        return int(cursor.fetchone()[0])


async def open_stream(port: int, path: str) -> tuple[asyncio.StreamWriter, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    return writer, head.split(b"\r\n")[0]


def test_waiting_streams_hold_no_thread_and_no_database_connection(server, settings) -> None:
    port, pid, address = server
    settings.GEARATTACH = {**settings.GEARATTACH, "SERVERS": [address]}
    nobody(settings)
    job = submit("tests.nobody", key="stuck")
    token = make_token(job.function, job.key, None)
    count = 15  # within the default limit of 20 streams per client

    def census() -> tuple[int, int | None]:
        try:
            return threads(pid), database_connections(pid)
        finally:
            connection.close()  # this thread's: PostgreSQL must drop the test database

    async def scenario() -> dict[str, tuple[int, int | None]]:
        seen = {"idle": await asyncio.to_thread(census)}
        streams = [
            await open_stream(port, f"/gearattach/jobs/{token}/events/") for _ in range(count)
        ]
        assert {status for _, status in streams} == {b"HTTP/1.1 200 OK"}
        await asyncio.sleep(0.5)
        seen["streams"] = await asyncio.to_thread(census)
        for writer, _ in streams:
            writer.close()
        polls = [
            asyncio.create_task(open_stream(port, f"/gearattach/jobs/{token}/poll/?timeout=4"))
            for _ in range(count)
        ]
        await asyncio.sleep(1.5)
        seen["polls"] = await asyncio.to_thread(census)
        for writer, status in await asyncio.gather(*polls):
            assert status == b"HTTP/1.1 200 OK"
            writer.close()
        return seen

    seen = asyncio.run(scenario())
    idle_threads, _ = seen["idle"]
    for moment in ("streams", "polls"):
        held_threads, held_connections = seen[moment]
        # Before the fix: one thread and one connection per waiting stream (15 each).
        assert held_threads - idle_threads <= 4, seen
        if held_connections is not None:  # PostgreSQL: the hub's one connection at most
            assert held_connections <= 1, seen


# -- Prefer: wait (review 3, finding 3) ----------------------------------------------------
def wait_request(path: str) -> bytes:
    """A cookieless program asking with ``Prefer: wait`` (a new session every time)."""
    return (
        f"GET {path} HTTP/1.1\r\nHost: localhost\r\nAccept: application/json\r\n"
        "Prefer: wait=5\r\n\r\n"
    ).encode()


async def ask_and_wait(port: int, path: str) -> tuple[float, bytes]:
    """Send the request; return when its answer came (monotonic time) and its status line."""
    loop = asyncio.get_running_loop()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(wait_request(path))
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
        return loop.time(), head.split(b"\r\n")[0]
    finally:
        writer.close()


def test_prefer_wait_holds_no_connection_and_a_cookieless_client_cannot_escape_its_limit(
    server, settings
) -> None:
    """30 cookieless JSON requests with ``Prefer: wait`` on one shared job: before the fix
    all 30 waited (each got a new session, so the per-client limit of 20 never applied),
    each on a thread of its own and a database connection."""
    port, pid, address = server
    settings.GEARATTACH = {**settings.GEARATTACH, "SERVERS": [address]}

    def census() -> tuple[int, int | None]:
        try:
            return threads(pid), database_connections(pid)
        finally:
            connection.close()

    async def scenario() -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        seen: dict[str, Any] = {"idle": await asyncio.to_thread(census)}
        start = loop.time()
        shared = [
            asyncio.create_task(ask_and_wait(port, "/offload/shared/?year=2031"))
            for _ in range(30)
        ]
        await asyncio.sleep(2)
        seen["shared"] = await asyncio.to_thread(census)
        seen["answered early"] = sum(1 for task in shared if task.done())
        answers = await asyncio.gather(*shared)
        seen["statuses"] = {status for _, status in answers}
        seen["waited"] = sum(1 for when, _ in answers if when - start > 4)
        # An async view waits on the event loop: no thread of its own.
        own = [asyncio.create_task(ask_and_wait(port, "/offload/async/")) for _ in range(15)]
        await asyncio.sleep(2)
        seen["async"] = await asyncio.to_thread(census)
        await asyncio.gather(*own)
        return seen

    seen = asyncio.run(scenario())
    idle_threads, _ = seen["idle"]
    assert seen["statuses"] == {b"HTTP/1.1 202 Accepted"}  # no worker: the job stays queued
    # The client's limit (20), counted by its address while its sessions are new.
    assert seen["waited"] == 20, seen
    assert seen["answered early"] == 10, seen
    shared_threads, shared_connections = seen["shared"]
    assert shared_threads - idle_threads <= 20 + 4, seen  # a sync view waits on a thread
    async_threads, async_connections = seen["async"]
    assert async_threads - idle_threads <= 4, seen
    for held in (shared_connections, async_connections):
        if held is not None:  # PostgreSQL: the hub's one connection at most
            assert held <= 1, seen
