"""A worker and helpers speaking the binary protocol by hand, for the protocol-layer tests."""

from __future__ import annotations

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
