"""Blocking Gearman client: submit, status by unique, and foreground attachment.

Connections are kept per thread and per server. A foreground attachment owns a
connection while it streams; once its job has ended the connection goes back to a
small per-thread pool for the next attachment. If it is given up while its job may
not have started, the connection is parked until the job runs (see :mod:`.linger`),
because gearmand drops a queued job whose last foreground client leaves.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Literal

from . import linger
from .connection import Connection
from .errors import ConnectionFailed, ServerError
from .protocol import Command, Packet, Priority, check_unique, encode, submit_command
from .rendezvous import Address

EventKind = Literal["started", "status", "data", "warning", "complete", "failed", "exception"]
TERMINAL: frozenset[str] = frozenset({"complete", "failed", "exception"})
#: Idle foreground connections a thread keeps per server for its next attachment.
POOL_SIZE = 4


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
    if kind == "data" and not packet.args[1]:
        # The start signal: this app's workers send an empty WORK_DATA when a job starts
        # (gearmand itself tells clients nothing then). Empty, because the gearman CLI
        # prints WORK_DATA and dies of WORK_STATUS 0/0 (SIGFPE), and task data is JSON.
        return WorkEvent("started", packet.args[0])
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
        """Close this thread's connections (parked attachments stay with :mod:`.linger`)."""
        for conn in self._local.__dict__.pop("pool", {}).values():
            conn.close()
        for idle in self._local.__dict__.pop("idle", {}).values():
            for conn in idle:
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

    def status_unique_many(self, address: Address, uniques: list[bytes]) -> list[UniqueStatus]:
        """``GET_STATUS_UNIQUE`` for many keys in one write (replies come in order)."""
        if not uniques:
            return []
        for unique in uniques:
            check_unique(unique)
        conn = self.connection(address)
        payload = b"".join(encode(Command.GET_STATUS_UNIQUE, u) for u in uniques)
        try:
            conn.send_bytes(payload)
        except ConnectionFailed:
            conn.send_bytes(payload)  # a kept connection closed by a restart: once more
        return [
            UniqueStatus.from_packet(_expect(conn, Command.STATUS_RES_UNIQUE)) for _ in uniques
        ]

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
        return self.follow(address, function, unique, data, priority, status=False)

    def follow(
        self,
        address: Address,
        function: str,
        unique: bytes,
        data: bytes,
        priority: Priority | str = Priority.NORMAL,
        *,
        status: bool = True,
    ) -> ForegroundJob:
        """Join (or submit) a foreground job; with ``status``, learn what it was first.

        ``GET_STATUS_UNIQUE`` goes out with the ``SUBMIT_JOB`` in one write, so one
        round trip tells whether the submit joined a job gearmand knew (``.status``:
        the job just before this submit) or created a new one.
        """
        check_unique(unique)
        pool = self._idle().get(address)
        while pool:
            conn = pool.pop()
            try:
                return self._follow_on(conn, False, function, unique, data, priority, status)
            except ConnectionFailed:
                continue  # kept across a gearmand restart: try the next, or a fresh one
        conn = Connection(address, self.timeout)
        return self._follow_on(conn, True, function, unique, data, priority, status)

    def _follow_on(
        self,
        conn: Connection,
        fresh: bool,
        function: str,
        unique: bytes,
        data: bytes,
        priority: Priority | str,
        status: bool,
    ) -> ForegroundJob:
        try:
            conn.connect()  # first: connecting discards packets deferred before it
            if fresh:
                conn.defer(Command.OPTION_REQ, b"exceptions")
            if status:
                conn.defer(Command.GET_STATUS_UNIQUE, unique)
            conn.send(submit_command(priority, background=False), function, unique, data)
            if fresh:
                _expect(conn, Command.OPTION_RES)
            before = (
                UniqueStatus.from_packet(_expect(conn, Command.STATUS_RES_UNIQUE))
                if status
                else None
            )
            created = _expect(conn, Command.JOB_CREATED)
        except BaseException:
            conn.close()
            raise
        return ForegroundJob(conn, created.args[0], unique, before, self._release)

    def _idle(self) -> dict[Address, list[Connection]]:
        pool: dict[Address, list[Connection]] = self._local.__dict__.setdefault("idle", {})
        return pool

    def _release(self, conn: Connection) -> None:
        """Keep a connection whose attachment has ended for this thread's next one."""
        pool = self._idle().setdefault(conn.address, [])
        if conn.connected and len(pool) < POOL_SIZE:
            pool.append(conn)
        else:
            conn.close()


def _expect(conn: Connection, reply: Command) -> Packet:
    packet = conn.read_packet()
    assert packet is not None
    raise_for_error(packet)
    if packet.command is not reply:
        raise conn._fail(f"expected {reply.name}, got {packet.command.name}")
    return packet


class ForegroundJob:
    """Events of one foreground attachment; iterate, then ``close()`` (or use ``with``).

    ``status`` is the job as gearmand knew it just before this attachment (``None``
    when not asked). ``started`` turns true once the job is known to run: gearmand
    said so, or an event arrived.
    """

    def __init__(
        self,
        conn: Connection,
        handle: bytes,
        unique: bytes,
        status: UniqueStatus | None = None,
        release: Callable[[Connection], None] | None = None,
    ) -> None:
        self.conn = conn
        self.handle = handle
        self.unique = unique
        self.status = status
        self.started = status is not None and status.running
        self.finished = False
        self._release = release

    def next_event(self, timeout: float | None = None) -> WorkEvent | None:
        """The next event of this job; ``None`` after ``timeout`` seconds of silence."""
        while not self.finished:
            packet = self.conn.read_packet(timeout)
            if packet is None:
                return None
            raise_for_error(packet)
            event = event_from_packet(packet)
            if event is None or event.handle != self.handle:
                continue
            if event.terminal:
                self.finished = True
            else:
                self.started = True
            return event
        return None

    def events(self, poll: float | None = None) -> Iterator[WorkEvent | None]:
        """Yield events until a terminal one; yield ``None`` each ``poll`` seconds of silence."""
        while not self.finished:
            yield self.next_event(poll)

    def close(self) -> None:
        """Close, or park the connection if leaving now could make gearmand drop the job."""
        if not self.conn.connected:
            return
        if self.finished:
            if self._release is not None:
                self._release(self.conn)
            else:
                self.conn.close()
            return
        linger.park(self.conn, {self.handle: self.unique})

    def abandon(self) -> None:
        """Close at once: only for a job that carries no work (an attach marker) or is gone."""
        self.finished = True
        self.conn.close()

    def __enter__(self) -> ForegroundJob:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
