"""The process's Gearman clients, configured from settings."""

from __future__ import annotations

import os

from .conf import conf
from .gearman.aio import AsyncClient
from .gearman.client import Client
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


def _forget_after_fork() -> None:
    # Sockets inherited from a parent must never be shared with it.
    _clients.clear()
    _async_clients.clear()


os.register_at_fork(after_in_child=_forget_after_fork)
