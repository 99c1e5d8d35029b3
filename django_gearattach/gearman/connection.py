"""A blocking connection to one gearmand, built on the sans-IO codec."""

from __future__ import annotations

import contextlib
import select
import socket
import threading
import time
from collections import deque

from .errors import ConnectionFailed, ServerError
from .protocol import Command, Packet, PacketParser, TextReplyParser, encode
from .rendezvous import Address

RECV_SIZE = 256 * 1024


class Connection:
    """One TCP connection speaking the binary protocol.

    ``timeout`` bounds connecting and each wait for a reply; ``None`` waits forever.
    Any socket failure closes the connection and raises :class:`ConnectionFailed`;
    the next call reconnects. Sends may come from several threads (a worker's
    watchdog ends a job on the connection its loop uses): each packet leaves whole,
    never interleaved with another thread's.
    """

    def __init__(self, address: Address, timeout: float | None = 10.0) -> None:
        self.address = address
        self.timeout = timeout
        self._sock: socket.socket | None = None
        self._parser = PacketParser()
        self._pending: deque[Packet] = deque()
        self._deferred = b""
        self._send_lock = threading.Lock()

    # -- lifecycle -------------------------------------------------------------------
    @property
    def connected(self) -> bool:
        return self._sock is not None

    def connect(self) -> None:
        if self._sock is not None:
            return
        try:
            sock = socket.create_connection(
                (self.address.host, self.address.port), timeout=self.timeout
            )
        except OSError as exc:
            raise ConnectionFailed(str(self.address), f"cannot connect ({exc})") from exc
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.settimeout(None)
        self._sock = sock
        self._parser = PacketParser()
        self._pending.clear()
        self._deferred = b""

    def close(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.close()

    def fileno(self) -> int:
        if self._sock is None:
            raise ConnectionFailed(str(self.address), "not connected")
        return self._sock.fileno()

    def __enter__(self) -> Connection:
        self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- I/O -------------------------------------------------------------------------
    def _fail(self, reason: str, exc: BaseException | None = None) -> ConnectionFailed:
        self.close()
        error = ConnectionFailed(str(self.address), reason)
        if exc is not None:
            error.__cause__ = exc
        return error

    def send_bytes(self, data: bytes) -> None:
        with self._send_lock:
            self.connect()
            assert self._sock is not None
            data, self._deferred = self._deferred + data, b""
            try:
                self._sock.sendall(data)
            except OSError as exc:
                raise self._fail(f"send failed ({exc})", exc) from exc

    def defer(self, command: Command, *args: bytes | str | int) -> None:
        """Queue a packet to leave with the next send (one system call for both)."""
        packet = encode(command, *args)
        with self._send_lock:
            self._deferred += packet

    def flush(self) -> None:
        if self._deferred:
            self.send_bytes(b"")

    def send(self, command: Command, *args: bytes | str | int) -> None:
        self.send_bytes(encode(command, *args))

    def _fill(self, timeout: float | None) -> bool:
        """Read once from the socket; False when ``timeout`` passed with nothing to read."""
        assert self._sock is not None
        if timeout is not None:
            ready, _, _ = select.select([self._sock], [], [], max(timeout, 0))
            if not ready:
                return False
        try:
            data = self._sock.recv(RECV_SIZE)
        except OSError as exc:
            raise self._fail(f"receive failed ({exc})", exc) from exc
        if not data:
            raise self._fail("server closed the connection")
        self._parser.feed(data)
        self._pending.extend(self._parser.packets())
        return True

    def read_packet(self, timeout: float | bool | None = True) -> Packet | None:
        """Next packet from the server.

        ``timeout=True`` uses the connection's timeout and raises on expiry; a number
        or ``None`` waits that long (``None``: forever) and returns ``None`` on expiry.
        """
        self.connect()
        raise_on_expiry = timeout is True
        limit = self.timeout if timeout is True else timeout
        assert limit is None or isinstance(limit, (int, float))
        deadline = None if limit is None else time.monotonic() + limit
        while not self._pending:
            remaining = None if deadline is None else max(deadline - time.monotonic(), 0.0)
            if not self._fill(remaining):
                if raise_on_expiry:
                    raise self._fail(f"no reply within {self.timeout} s")
                return None
        return self._pending.popleft()

    def request(self, command: Command, *args: bytes | str | int, reply: Command) -> Packet:
        """Send a request and wait for its reply (packets of other types are an error)."""
        self.send(command, *args)
        packet = self.read_packet()
        assert packet is not None
        if packet.command is Command.ERROR:
            raise ServerError(
                packet.args[0].decode(errors="replace"), packet.args[1].decode(errors="replace")
            )
        if packet.command is not reply:
            raise self._fail(f"expected {reply.name}, got {packet.command.name}")
        return packet


def admin_command(address: Address, command: str, timeout: float = 5.0) -> list[str]:
    """Run one admin text command and return its reply lines.

    Block replies (``status``, ``workers``, ``show jobs``...) end with a lone ``.``;
    one-line replies (``version``, ``getpid``, ``cancel job``) are returned as one line.
    """
    block = command.split()[0] in {"status", "workers", "show"}
    try:
        sock = socket.create_connection((address.host, address.port), timeout=timeout)
    except OSError as exc:
        raise ConnectionFailed(str(address), f"cannot connect ({exc})") from exc
    parser = TextReplyParser()
    try:
        sock.sendall(command.encode() + b"\n")
        while True:
            result = parser.complete_block() if block else parser.complete_line()
            if result is not None:
                return result if isinstance(result, list) else [result]
            data = sock.recv(65536)
            if not data:
                raise ConnectionFailed(str(address), "server closed the admin connection")
            parser.feed(data)
    except OSError as exc:
        raise ConnectionFailed(str(address), f"admin command failed ({exc})") from exc
    finally:
        sock.close()
