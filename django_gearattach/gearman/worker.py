"""Blocking worker side: register functions on every server, grab jobs, report on them.

:class:`WorkerPool` keeps one connection per server. ``grab()`` asks each server
for a job in turn; when none has work it sends PRE_SLEEP everywhere and waits for
a NOOP wake-up. Servers that fail are retried with exponential backoff, so a
restarted gearmand is picked up again without restarting the worker. A job whose key
holds control characters (another client's: this package's refuse to make one) is
failed at once and never handed on.
"""

from __future__ import annotations

import logging
import select
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from .connection import Connection
from .errors import ConnectionFailed, GearmanError
from .protocol import Command, has_control_characters
from .rendezvous import Address

logger = logging.getLogger("django_gearattach.gearman.worker")

BACKOFF_START = 0.1
BACKOFF_MAX = 5.0
# How long grab_ahead waits for gearmand's reply. A finished job's report waits on it,
# so a server that accepts but does not answer is given up on quickly.
AHEAD_WAIT = 1.0


class JobConnection(Protocol):
    """The connection a job came on: a blocking :class:`Connection`, or an asyncio
    one (:class:`~.aioworker.AsyncWorkerConnection`, whose ``send`` works from any thread)."""

    @property
    def address(self) -> Address: ...
    def send(self, command: Command, *args: bytes | str | int) -> None: ...
    def defer(self, command: Command, *args: bytes | str | int) -> None: ...


@dataclass(frozen=True, slots=True)
class Assignment:
    """A job handed to this worker (JOB_ASSIGN_UNIQ)."""

    connection: JobConnection
    handle: bytes
    function: str
    unique: bytes
    data: bytes

    @property
    def server(self) -> Address:
        return self.connection.address

    def send(self, command: Command, *args: bytes | str | int) -> None:
        self.connection.send(command, self.handle, *args)

    def send_last(self, command: Command, *args: bytes | str | int) -> None:
        """Send the job's final packet together with the pool's next request."""
        self.connection.defer(command, self.handle, *args)


class _Server:
    def __init__(self, address: Address, timeout: float) -> None:
        self.conn = Connection(address, timeout)
        self.registered = False
        self.failures = 0
        self.retry_at = 0.0

    def failed(self) -> None:
        self.conn.close()
        self.registered = False
        self.failures += 1
        self.retry_at = time.monotonic() + min(
            BACKOFF_START * 2 ** (self.failures - 1), BACKOFF_MAX
        )


class WorkerPool:
    def __init__(
        self, servers: Sequence[Address], functions: Iterable[str], timeout: float = 10.0
    ) -> None:
        self.functions = sorted(set(functions))
        #: Functions this worker does not ask for now (CANT_DO sent; see :meth:`can_do`).
        self.paused: set[str] = set()
        self._servers = [_Server(a, timeout) for a in servers]
        self._next = 0

    def can_do(self, name: str, able: bool) -> None:
        """Ask for ``name``'s jobs again (CAN_DO), or stop asking (CANT_DO), everywhere.

        gearmand hands a worker only jobs of functions it can do, so a paused
        function's jobs go to other workers (or wait). A reconnect registers only the
        functions not paused.
        """
        if able == (name not in self.paused):
            return
        if able:
            self.paused.discard(name)
        else:
            self.paused.add(name)
        command = Command.CAN_DO if able else Command.CANT_DO
        for server in self._servers:
            if not server.registered:
                continue
            try:
                server.conn.send(command, name)
            except GearmanError:
                server.failed()

    @property
    def servers(self) -> list[Address]:
        return [s.conn.address for s in self._servers]

    def connected_servers(self) -> list[Address]:
        return [s.conn.address for s in self._servers if s.registered]

    def _ensure(self, server: _Server) -> bool:
        if server.registered:
            return True
        if time.monotonic() < server.retry_at:
            return False
        try:
            server.conn.connect()
            for name in self.functions:
                if name not in self.paused:
                    server.conn.send(Command.CAN_DO, name)
        except GearmanError:
            server.failed()
            return False
        server.registered = True
        server.failures = 0
        return True

    def _grab_from(self, server: _Server, wait: float | None = None) -> Assignment | None:
        """GRAB_JOB_UNIQ on one server; ``wait`` bounds each reply (default: the timeout)."""
        conn = server.conn
        conn.send(Command.GRAB_JOB_UNIQ)
        while True:
            packet = conn.read_packet() if wait is None else conn.read_packet(wait)
            if packet is None:  # its reply would come later, out of step: drop the connection
                raise ConnectionFailed(str(conn.address), f"no reply to a grab within {wait} s")
            if packet.command is Command.NOOP:
                continue
            if packet.command is Command.NO_JOB:
                return None
            if packet.command is Command.JOB_ASSIGN_UNIQ:
                handle, function, unique, data = packet.args
                if not has_control_characters(unique):
                    return Assignment(conn, handle, function.decode(), unique, data)
                # Someone else's client made it (ours refuse such keys): it would forge
                # log lines. Failed here, never run; then the next job.
                logger.warning(
                    "job %r[%r] refused: its key has control characters", function, unique
                )
                conn.send(Command.WORK_FAIL, handle)
                conn.send(Command.GRAB_JOB_UNIQ)
                continue
            if packet.command is Command.ERROR:
                # A late error for a finished job (for instance JOB_NOT_FOUND); ignore it.
                continue
            raise GearmanError(f"unexpected {packet.command.name} while grabbing a job")

    def grab(self, wait: float = 1.0) -> Assignment | None:
        """Return the next job from any server, or ``None`` after ``wait`` seconds idle."""
        count = len(self._servers)
        for offset in range(1, count):
            self._flush(self._servers[(self._next + offset) % count])
        for offset in range(count):
            server = self._servers[(self._next + offset) % count]
            if not self._ensure(server):
                continue
            try:
                job = self._grab_from(server)
            except GearmanError:
                server.failed()
                continue
            if job is not None:
                self._next = (self._next + offset + 1) % count
                return job
        self._sleep(wait)
        return None

    def grab_ahead(self) -> Assignment | None:
        """One more job from the server next in turn, without waiting; ``None`` if none.

        A worker asks for its next job before it reports the current one, so both
        records are written in one transaction (gearmand lets a worker hold several
        jobs; if the connection drops, it requeues all of them). The current job's
        report waits on this, so only a connected server is asked (no reconnecting
        here), and one that does not answer within :data:`AHEAD_WAIT` is dropped.
        """
        count = len(self._servers)
        server = self._servers[self._next % count] if count else None
        if server is None or not server.registered:
            return None
        self._next = (self._next + 1) % count  # a NO_JOB server is asked last by grab()
        try:
            return self._grab_from(server, wait=min(AHEAD_WAIT, server.conn.timeout or AHEAD_WAIT))
        except GearmanError:
            server.failed()
            return None

    def _flush(self, server: _Server) -> None:
        try:
            server.conn.flush()
        except GearmanError:
            server.failed()

    def _sleep(self, wait: float) -> None:
        live: list[_Server] = []
        for server in self._servers:
            if not server.registered:
                continue
            try:
                server.conn.send(Command.PRE_SLEEP)
                live.append(server)
            except GearmanError:
                server.failed()
        if not live:
            time.sleep(min(wait, BACKOFF_START))
            return
        try:
            select.select([s.conn.fileno() for s in live], [], [], wait)
        except (OSError, ValueError, GearmanError):
            return
        # The NOOP (or EOF) is read by the next GRAB_JOB_UNIQ round.

    def report_failure(self, job: Assignment) -> None:
        for server in self._servers:
            if server.conn is job.connection:
                server.failed()

    def close(self) -> None:
        for server in self._servers:
            self._flush(server)
            server.conn.close()
            server.registered = False
