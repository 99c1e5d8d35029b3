"""A server that accepts connections and never answers: every request times out."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest

from django_gearattach.gearman.aio import AsyncConnection
from django_gearattach.gearman.client import Client
from django_gearattach.gearman.errors import ConnectionFailed
from django_gearattach.gearman.rendezvous import Address


@pytest.fixture
def silent_server() -> Iterator[Address]:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        yield Address("127.0.0.1", listener.getsockname()[1])


def test_the_blocking_client_gives_up_after_its_timeout(silent_server):
    client = Client(timeout=0.3)
    started = time.monotonic()
    with pytest.raises(ConnectionFailed, match=r"no reply within 0\.3 s"):
        client.status_unique(silent_server, b"key")
    assert time.monotonic() - started < 5
    client.close()


async def test_the_async_connection_fails_every_waiting_request_after_its_timeout(silent_server):
    conn = AsyncConnection(silent_server, timeout=0.3)
    started = time.monotonic()
    with pytest.raises(ConnectionFailed):
        await conn.status_unique(b"key")
    assert time.monotonic() - started < 5
    assert not conn.connected
    await conn.close()
