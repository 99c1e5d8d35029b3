"""A worker and helpers speaking the binary protocol by hand, for the protocol-layer tests."""

from __future__ import annotations

import socket
import struct
import time
import uuid

from django_gearattach.gearman.client import ForegroundJob, WorkEvent
from django_gearattach.gearman.connection import Connection
from django_gearattach.gearman.protocol import Command, Packet
from django_gearattach.gearman.rendezvous import Address

TIMEOUT = 5.0


def new_key() -> bytes:
    return uuid.uuid4().hex[:20].encode()


def new_function() -> str:
    return f"fn.{uuid.uuid4().hex[:8]}"


class RawWorker:
    """A worker speaking the binary protocol by hand."""

    def __init__(self, address: Address, *functions: str) -> None:
        self.conn = Connection(address, timeout=TIMEOUT)
        for function in functions:
            self.conn.send(Command.CAN_DO, function)

    def grab_once(self) -> Packet:
        """JOB_ASSIGN_UNIQ or NO_JOB (NOOP wake-ups are skipped)."""
        self.conn.send(Command.GRAB_JOB_UNIQ)
        while True:
            packet = self.conn.read_packet()
            assert packet is not None
            if packet.command is not Command.NOOP:
                assert packet.command in (Command.JOB_ASSIGN_UNIQ, Command.NO_JOB), packet
                return packet

    def grab(self, timeout: float = TIMEOUT) -> Packet:
        deadline = time.monotonic() + timeout
        while True:
            packet = self.grab_once()
            if packet.command is Command.JOB_ASSIGN_UNIQ:
                return packet
            assert time.monotonic() < deadline, "no job was assigned in time"
            time.sleep(0.02)

    def settle(self) -> None:
        """Wait until gearmand has read every packet sent so far on this connection
        (it answers an ECHO_REQ after them, in order)."""
        self.conn.request(Command.ECHO_REQ, b"settle", reply=Command.ECHO_RES)

    def close(self) -> None:
        self.conn.close()


def collect(job: ForegroundJob, timeout: float = TIMEOUT) -> list[WorkEvent]:
    deadline = time.monotonic() + timeout
    events: list[WorkEvent] = []
    for event in job.events(poll=0.05):
        assert time.monotonic() < deadline, f"no terminal event; got {events}"
        if event is not None:
            events.append(event)
    return events


class ForgingPeer:
    """Any host on gearmand's network: a worker written with a bare socket and ``struct``.

    It registers for a function, takes the next job and answers whatever it likes
    (the packets of a compromised or misconfigured host; nothing of this app's code
    is used to build them).
    """

    REQ = b"\0REQ"

    def __init__(self, address: str, function: str) -> None:
        host, port = address.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=TIMEOUT)
        self.function = function
        self._send(1, function.encode())  # CAN_DO

    def _send(self, command: int, *arguments: bytes) -> None:
        body = b"\0".join(arguments)
        self.sock.sendall(self.REQ + struct.pack(">II", command, len(body)) + body)

    def _read(self) -> tuple[int, list[bytes]]:
        head = self._exactly(12)
        assert head[:4] == b"\0RES", head
        command, size = struct.unpack(">II", head[4:])
        return command, self._exactly(size).split(b"\0") if size else []

    def _exactly(self, size: int) -> bytes:
        data = b""
        while len(data) < size:
            chunk = self.sock.recv(size - len(data))
            assert chunk, "gearmand closed the connection"
            data += chunk
        return data

    def take(self, timeout: float = TIMEOUT) -> tuple[bytes, bytes, bytes]:
        """The next job (handle, unique, data), as JOB_ASSIGN_UNIQ gave it."""
        deadline = time.monotonic() + timeout
        while True:
            self._send(30)  # GRAB_JOB_UNIQ
            while True:
                command, arguments = self._read()
                if command != 6:  # NOOP
                    break
            if command == 31:  # JOB_ASSIGN_UNIQ: handle, function, unique, data
                handle, _, unique, *data = arguments
                return handle, unique, b"\0".join(data)
            assert command == 10, command  # NO_JOB
            assert time.monotonic() < deadline, "gearmand assigned no job in time"
            time.sleep(0.02)

    def complete(self, handle: bytes, payload: bytes) -> None:
        self._send(13, handle, payload)  # WORK_COMPLETE

    def fail(self, handle: bytes) -> None:
        self._send(14, handle)  # WORK_FAIL

    def exception(self, handle: bytes, text: bytes) -> None:
        self._send(25, handle, text)  # WORK_EXCEPTION

    def close(self) -> None:
        self.sock.close()
