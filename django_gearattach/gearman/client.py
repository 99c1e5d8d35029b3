"""Blocking Gearman client: submit, status by unique, and foreground attachment.

Connections are kept per thread and per server. A foreground attachment owns a
connection while it streams; if it is given up while its job is not running, the
connection is parked until the job runs (see :mod:`.linger`), because gearmand drops a
queued job whose last foreground client leaves.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

from . import linger
from .connection import Connection
from .errors import ConnectionFailed, ServerError
from .protocol import Command, Packet, Priority, check_unique, submit_command
from .routing import Address

EventKind = Literal["status", "data", "warning", "complete", "failed", "exception"]
TERMINAL: frozenset[str] = frozenset({"complete", "failed", "exception"})


@dataclass(frozen=True, slots=True)
class UniqueStatus:
    unique: bytes
    known: bool
    running: bool
    numerator: int
    denominator: int
    clients: int

    @classmethod
    def from_packet(cls, packet: Packet) -> UniqueStatus:
        unique, known, running, num, den, clients = packet.args
        return cls(unique, known == b"1", running == b"1", _int(num), _int(den), _int(clients))


def _int(value: bytes) -> int:
    try:
        return int(value.rstrip(b"\0") or 0)
    except ValueError:
        return 0


@dataclass(frozen=True, slots=True)
class WorkEvent:
    """One WORK_* packet for a job, as a client sees it."""

    kind: EventKind
    handle: bytes
    data: bytes = b""
    numerator: int = 0
    denominator: int = 0

    @property
    def terminal(self) -> bool:
        return self.kind in TERMINAL


_EVENT_KINDS: dict[Command, EventKind] = {
    Command.WORK_STATUS: "status",
    Command.WORK_DATA: "data",
    Command.WORK_WARNING: "warning",
    Command.WORK_COMPLETE: "complete",
    Command.WORK_FAIL: "failed",
    Command.WORK_EXCEPTION: "exception",
}


def event_from_packet(packet: Packet) -> WorkEvent | None:
    kind = _EVENT_KINDS.get(packet.command)
    if kind is None:
        return None
    if kind == "status":
        handle, num, den = packet.args
        return WorkEvent(kind, handle, numerator=_int(num), denominator=_int(den))
    if kind == "failed":
        # gearmand 1.1.20 sends WORK_FAIL with a trailing NUL after the handle.
        return WorkEvent(kind, packet.args[0].rstrip(b"\0"))
    return WorkEvent(kind, packet.args[0], data=packet.args[1])


def raise_for_error(packet: Packet) -> None:
    if packet.command is Command.ERROR:
        raise ServerError(
            packet.args[0].decode(errors="replace"), packet.args[1].decode(errors="replace")
        )


class Client:
    """A blocking client; one instance may be shared by every thread of a process."""

    def __init__(self, timeout: float | None = 10.0) -> None:
        self.timeout = timeout
        self._local = threading.local()

    def connection(self, address: Address) -> Connection:
        """This thread's reusable connection to ``address``."""
        pool: dict[Address, Connection] = self._local.__dict__.setdefault("pool", {})
        conn = pool.get(address)
        if conn is None:
            conn = pool[address] = Connection(address, self.timeout)
        return conn

    def close(self) -> None:
        for conn in self._local.__dict__.pop("pool", {}).values():
            conn.close()

    def request(
        self, address: Address, command: Command, *args: bytes | str | int, reply: Command
    ) -> Packet:
        """A request on this thread's connection; a stale reused connection is retried once.

        A kept connection may have been closed by a gearmand restart since its last
        use; that shows only when it is used again, so one fresh attempt follows.
        """
        conn = self.connection(address)
        reused = conn.connected
        try:
            return conn.request(command, *args, reply=reply)
        except ConnectionFailed:
            if not reused:
                raise
        return conn.request(command, *args, reply=reply)

    def submit_background(
        self,
        address: Address,
        function: str,
        unique: bytes,
        data: bytes,
        priority: Priority | str = Priority.NORMAL,
    ) -> bytes:
        """Submit a background job and return its handle."""
        check_unique(unique)
        packet = self.request(
            address,
            submit_command(priority, background=True),
            function,
            unique,
            data,
            reply=Command.JOB_CREATED,
        )
        return packet.args[0]

    def submit_epoch(
        self, address: Address, function: str, unique: bytes, epoch: int, data: bytes
    ) -> bytes:
        """Submit a background job that gearmand hands out at ``epoch`` (Unix seconds).

        SUBMIT_JOB_EPOCH has no priority variant: the job is queued at normal priority.
        """
        check_unique(unique)
        packet = self.request(
            address,
            Command.SUBMIT_JOB_EPOCH,
            function,
            unique,
            int(epoch),
            data,
            reply=Command.JOB_CREATED,
        )
        return packet.args[0]

    def status_unique(self, address: Address, unique: bytes) -> UniqueStatus:
        check_unique(unique)
        packet = self.request(
            address, Command.GET_STATUS_UNIQUE, unique, reply=Command.STATUS_RES_UNIQUE
        )
        return UniqueStatus.from_packet(packet)

    def echo(self, address: Address, payload: bytes = b"ping") -> bytes:
        return self.request(address, Command.ECHO_REQ, payload, reply=Command.ECHO_RES).args[0]

    def foreground(
        self,
        address: Address,
        function: str,
        unique: bytes,
        data: bytes,
        priority: Priority | str = Priority.NORMAL,
    ) -> ForegroundJob:
        """Submit (or join, when the unique is known) a foreground job and stream its events.

        The stream uses a connection of its own, so a thread may hold several.
        """
        check_unique(unique)
        conn = Connection(address, self.timeout)
        try:
            conn.request(Command.OPTION_REQ, b"exceptions", reply=Command.OPTION_RES)
            created = conn.request(
                submit_command(priority, background=False),
                function,
                unique,
                data,
                reply=Command.JOB_CREATED,
            )
        except BaseException:
            conn.close()
            raise
        return ForegroundJob(conn, created.args[0], unique)


class ForegroundJob:
    """Events of one foreground attachment; iterate, then ``close()`` (or use ``with``)."""

    def __init__(self, conn: Connection, handle: bytes, unique: bytes) -> None:
        self.conn = conn
        self.handle = handle
        self.unique = unique
        self.finished = False

    def events(self, poll: float | None = None) -> Iterator[WorkEvent | None]:
        """Yield events until a terminal one; yield ``None`` each ``poll`` seconds of silence."""
        while not self.finished:
            packet = self.conn.read_packet(poll)
            if packet is None:
                yield None
                continue
            raise_for_error(packet)
            event = event_from_packet(packet)
            if event is None or event.handle != self.handle:
                continue
            if event.terminal:
                self.finished = True
            yield event

    def close(self) -> None:
        """Close, or park the connection if leaving now could make gearmand drop the job."""
        if self.finished or not self.conn.connected:
            self.conn.close()
            return
        linger.park(self.conn, self.unique)

    def __enter__(self) -> ForegroundJob:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
