"""The asyncio runner's lanes: gearmand connections that grab jobs, one per server.

Jobs of the tasks without limits are grabbed by :data:`GRABBERS` lanes at once (a
grab is a round trip to gearmand). Each limited function (:mod:`~django_gearattach.
ratelimits`) is grabbed on lanes of its own, only while a right is held: a rate right
per job; with ``concurrency=N``, up to N lanes (no more than the runner's own limit),
each holding one slot (a holder of its own) and running one job at a time. So no
CANT_DO is ever sent for a function with a job running here (gearmand 1.1.20 would
requeue it). A server that fails is tried again with exponential backoff, on a new
connection: the jobs grabbed on the old one were requeued by gearmand, and their
packets must not reach the new one.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any

from ..conf import conf
from ..gearman.aioworker import AsyncWorkerConnection
from ..gearman.errors import GearmanError
from ..gearman.rendezvous import Address
from ..gearman.worker import Assignment
from ..ratelimits import Throttles
from ..tasks import Task

logger = logging.getLogger("django_gearattach.worker.loop")

#: Connections (per server) that grab the jobs of the tasks without limits.
GRABBERS = 4
BACKOFF_START = 0.1
BACKOFF_MAX = 5.0
#: Seconds a grab waits for a NOOP before it asks again.
IDLE_WAIT = 0.5


@dataclass(eq=False)
class Lane:
    """Connections (one per server) that grab jobs of ``functions``."""

    functions: list[str]
    servers: list[Address]
    throttles: Throttles | None = None
    #: Jobs this lane may run at once (None: only the runner's limit).
    room: asyncio.Semaphore | None = None
    conns: list[AsyncWorkerConnection] = field(default_factory=list)
    retry_at: list[float] = field(default_factory=list)
    failures: list[int] = field(default_factory=list)
    next: int = 0

    def __post_init__(self) -> None:
        self.conns = [AsyncWorkerConnection(a, self.functions, conf.TIMEOUT) for a in self.servers]
        self.retry_at = [0.0] * len(self.servers)
        self.failures = [0] * len(self.servers)

    @property
    def limited(self) -> str:
        return self.functions[0]

    async def grab(self) -> Assignment | None:
        """A job from the next server in turn that has one; None after waiting a while."""
        count = len(self.conns)
        for offset in range(count):
            index = (self.next + offset) % count
            if not await self._ensure(index):
                continue
            try:
                job = await self.conns[index].grab()
            except GearmanError as exc:
                self._failed(index, exc)
                continue
            if job is not None:
                self.next = (index + 1) % count
                return job
        live = [conn for conn in self.conns if conn.connected]
        if not live:
            await asyncio.sleep(BACKOFF_START)
            return None
        sleeps = [asyncio.create_task(conn.sleep(IDLE_WAIT)) for conn in live]
        try:
            await asyncio.wait(sleeps, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for sleeping in sleeps:
                sleeping.cancel()
        return None

    async def _ensure(self, index: int) -> bool:
        conn = self.conns[index]
        if conn.connected:
            return True
        if time.monotonic() < self.retry_at[index]:
            return False
        # A new connection object: packets of jobs grabbed on the old one (gearmand
        # requeued them when it dropped) must not reach the new one.
        conn = AsyncWorkerConnection(conn.address, self.functions, conn.timeout)
        self.conns[index] = conn
        try:
            await conn.connect()
        except GearmanError as exc:
            self._failed(index, exc)
            return False
        self.failures[index] = 0
        return True

    def _failed(self, index: int, exc: GearmanError) -> None:
        self.failures[index] += 1
        delay = min(BACKOFF_START * 2 ** (self.failures[index] - 1), BACKOFF_MAX)
        self.retry_at[index] = time.monotonic() + delay
        logger.warning("async runner: %s (again in %.1fs)", exc, delay)


def lanes_for(
    tasks: dict[str, Task[Any, Any]], servers: list[Address], concurrency: int, host: str
) -> list[Lane]:
    """The lanes of a runner of ``tasks`` (see the module's docstring)."""
    free = [name for name, t in tasks.items() if not (t.rate_limit or t.concurrency)]
    # Several connections grab at once: one grab is a round trip to gearmand.
    grabbers = min(GRABBERS, concurrency) if free else 0
    lanes = [Lane(free, servers) for _ in range(grabbers)]
    for name, task in sorted(tasks.items()):
        if name in free:
            continue
        count = min(task.concurrency, concurrency) if task.concurrency else 1
        for index in range(count):
            throttles = Throttles.for_tasks([task])
            assert throttles is not None
            # One holder per lane: each lane holds a concurrency slot of its own.
            throttles.holder = f"{host[:100]}:{os.getpid()}/{name[:150]}/{index}"
            room = asyncio.Semaphore(1) if task.concurrency else None
            lanes.append(Lane([name], servers, throttles, room))
    return lanes
