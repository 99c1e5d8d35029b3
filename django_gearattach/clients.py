"""The process's Gearman clients, configured from settings."""

from __future__ import annotations

import os
import time

from .conf import conf
from .gearman.aio import AsyncClient
from .gearman.client import Client
from .gearman.errors import ConnectionFailed
from .gearman.rendezvous import Address, route

_clients: dict[float, Client] = {}
_async_clients: dict[float, AsyncClient] = {}


def get_client() -> Client:
    """The blocking client (connections reused per thread and server)."""
    timeout = conf.TIMEOUT
    client = _clients.get(timeout)
    if client is None:
        client = _clients[timeout] = Client(timeout)
    return client


def get_async_client() -> AsyncClient:
    """The asyncio client (one connection per server per event loop)."""
    timeout = conf.TIMEOUT
    client = _async_clients.get(timeout)
    if client is None:
        client = _async_clients[timeout] = AsyncClient(timeout)
    return client


def servers_for(function: str, key: str) -> list[Address]:
    """The configured servers in the order this (function, key) uses them."""
    return route(conf.SERVERS, function, key)


def wait_until_forgotten(server: Address, unique: bytes, within: float) -> bool:
    """Wait (up to ``within`` seconds) until ``server`` no longer knows ``unique``: a run
    that ended is gone, and a submit of the key makes a new job instead of joining it.
    Returns False when it still knew it in the end."""
    client = get_client()
    deadline = time.monotonic() + within
    delay = 0.002
    while True:
        try:
            if not client.status_unique(server, unique).known:
                return True
        except ConnectionFailed:
            return True  # that server is gone: the key goes wherever routing sends it
        if time.monotonic() + delay > deadline:
            return False
        time.sleep(delay)
        delay = min(delay * 2, 0.1)


def _forget_after_fork() -> None:
    # Sockets inherited from a parent must never be shared with it.
    _clients.clear()
    _async_clients.clear()


os.register_at_fork(after_in_child=_forget_after_fork)
