"""What each configured gearmand says about itself (the admin ``version`` and ``status``).

Used by the admin's servers page and the ``--deploy`` reachability check. The
servers are asked in parallel, so one unreachable host costs one timeout, not one
per server.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from .gearman.connection import admin_command
from .gearman.errors import GearmanError
from .gearman.protocol import parse_status
from .gearman.rendezvous import Address


@dataclass(frozen=True, slots=True)
class FunctionQueue:
    """One line of gearmand's ``status``: ``total`` counts the running jobs too."""

    function: str
    total: int
    running: int
    workers: int

    @property
    def waiting(self) -> int:
        """Jobs not started yet."""
        return max(self.total - self.running, 0)


@dataclass(frozen=True, slots=True)
class ServerHealth:
    address: str
    reachable: bool
    version: str = ""
    functions: list[FunctionQueue] = field(default_factory=list)
    error: str = ""


def probe(address: Address, timeout: float = 2.0) -> ServerHealth:
    """Ask one gearmand for its version and its per-function queue."""
    try:
        version = admin_command(address, "version", timeout=timeout)[0].removeprefix("OK ")
        functions = [
            FunctionQueue(s.function, s.queued, s.running, s.workers)
            for s in parse_status(admin_command(address, "status", timeout=timeout))
        ]
    except GearmanError as exc:
        return ServerHealth(str(address), False, error=str(exc))
    functions.sort(key=lambda f: f.function)
    return ServerHealth(str(address), True, version, functions)


def probe_all(addresses: Sequence[Address], timeout: float = 2.0) -> list[ServerHealth]:
    """:func:`probe` every address at once; results in the order given."""
    if len(addresses) <= 1:
        return [probe(a, timeout) for a in addresses]
    with ThreadPoolExecutor(max_workers=min(len(addresses), 16)) as pool:
        return list(pool.map(lambda a: probe(a, timeout), addresses))


@dataclass(frozen=True, slots=True)
class Unserved:
    """A function with jobs waiting on some server and no worker registered on any."""

    function: str
    waiting: int
    servers: list[str]


def unserved(healths: Sequence[ServerHealth]) -> list[Unserved]:
    """Functions whose waiting jobs no worker on any reachable server can run.

    A job is handed only to a worker connected to the server that holds it, but a
    worker that registers the function anywhere usually serves every server (one
    ``gearworker`` connects to all), so only a function registered nowhere is flagged.
    """
    waiting: dict[str, int] = {}
    servers: dict[str, list[str]] = {}
    workers: dict[str, int] = {}
    for health in healths:
        for queue in health.functions:
            workers[queue.function] = workers.get(queue.function, 0) + queue.workers
            if queue.waiting:
                waiting[queue.function] = waiting.get(queue.function, 0) + queue.waiting
                servers.setdefault(queue.function, []).append(health.address)
    return [
        Unserved(function, count, servers[function])
        for function, count in sorted(waiting.items())
        if not workers.get(function)
    ]
