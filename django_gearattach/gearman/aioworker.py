"""asyncio worker side: one gearmand connection that holds many jobs at once.

gearmand lets a worker connection grab job after job (GRAB_JOB_UNIQ) before it
reports any of them; each job is then reported on by its handle, in any order.
:class:`AsyncWorkerConnection` does that on an event loop: :meth:`grab` asks for one
job (at most one grab is outstanding per connection, so replies need no matching),
:meth:`sleep` sends PRE_SLEEP and waits for gearmand's NOOP, and :meth:`send` writes a
job's packets from the loop's thread or from any other one (the packet is handed to
the loop, after every packet sent before it: reports never overtake each other).

When the connection drops, gearmand requeues every job it held; packets for them
written afterwards are dropped here (their run's outcome is in the record, where
the next copy of the job finds it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Iterable

from .errors import ConnectionFailed, GearmanError
from .protocol import Command, Packet, PacketParser, encode, has_control_characters
from .rendezvous import Address
from .worker import Assignment

logger = logging.getLogger("django_gearattach.gearman.worker")


class AsyncWorkerConnection:
    """A worker connection to one gearmand on the running event loop."""

    def __init__(self, address: Address, functions: Iterable[str], timeout: float = 10.0) -> None:
        self.address = address
        self.functions = sorted(set(functions))
        self.timeout = timeout
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = 0
        self._reply: asyncio.Future[Packet] | None = None
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._outbox: list[bytes] = []

    @property
    def connected(self) -> bool:
        return self._writer is not None and not self._writer.is_closing()

    async def connect(self) -> None:
        """Connect and register the functions (CAN_DO); raises :class:`ConnectionFailed`."""
        if self.connected:
            return
        try:
            self._reader, self._writer = await asyncio.wait_for(
                asyncio.open_connection(self.address.host, self.address.port), self.timeout
            )
        except (OSError, TimeoutError) as exc:
            raise ConnectionFailed(str(self.address), f"cannot connect ({exc})") from exc
        self._loop = asyncio.get_running_loop()
        self._thread = threading.get_ident()
        self._task = asyncio.create_task(self._read_loop(), name=f"gearman worker {self.address}")
        for name in self.functions:
            self._write(encode(Command.CAN_DO, name))

    async def _read_loop(self) -> None:
        assert self._reader is not None
        parser = PacketParser()
        error: GearmanError = ConnectionFailed(str(self.address), "server closed the connection")
        try:
            while True:
                data = await self._reader.read(64 * 1024)
                if not data:
                    break
                parser.feed(data)
                for packet in parser.packets():
                    self._dispatch(packet)
        except (OSError, GearmanError) as exc:
            error = (
                exc
                if isinstance(exc, GearmanError)
                else ConnectionFailed(str(self.address), str(exc))
            )
        except asyncio.CancelledError:
            error = ConnectionFailed(str(self.address), "connection closed")
        self._drop(error)

    def _dispatch(self, packet: Packet) -> None:
        if packet.command is Command.NOOP:
            self._wake.set()
        elif packet.command is Command.ERROR:
            # A late error for a finished job (for instance JOB_NOT_FOUND): nothing waits.
            logger.debug("gearmand at %s: %r", self.address, packet.args)
        elif self._reply is not None and not self._reply.done():
            self._reply.set_result(packet)
        else:
            logger.warning("gearmand at %s: unexpected %s", self.address, packet.command.name)

    def _drop(self, error: GearmanError) -> None:
        if self._writer is not None:
            self._writer.close()
        self._writer = None
        if self._reply is not None and not self._reply.done():
            self._reply.set_exception(error)
        self._wake.set()

    def _write(self, data: bytes) -> None:
        # Packets written in one turn of the loop leave in one send(): hundreds of jobs
        # report at once, and a system call per packet would cost more than the packets.
        if not self._outbox and self._loop is not None:
            self._loop.call_soon(self._flush)
        self._outbox.append(data)

    def _flush(self) -> None:
        data, self._outbox = b"".join(self._outbox), []
        if data and self._writer is not None and not self._writer.is_closing():
            self._writer.write(data)

    # -- the worker's requests ------------------------------------------------------------
    async def grab(self) -> Assignment | None:
        """One job (JOB_ASSIGN_UNIQ), or None when gearmand has none (NO_JOB)."""
        while True:
            if not self.connected:
                raise ConnectionFailed(str(self.address), "not connected")
            assert self._loop is not None
            self._reply = self._loop.create_future()
            self._write(encode(Command.GRAB_JOB_UNIQ))
            try:
                packet = await asyncio.wait_for(self._reply, self.timeout)
            except TimeoutError:
                self._drop(ConnectionFailed(str(self.address), "no reply to a grab"))
                raise ConnectionFailed(str(self.address), "no reply to a grab") from None
            finally:
                self._reply = None
            if packet.command is Command.NO_JOB:
                return None
            if packet.command is not Command.JOB_ASSIGN_UNIQ:
                raise GearmanError(f"unexpected {packet.command.name} while grabbing a job")
            handle, function, unique, data = packet.args
            if not has_control_characters(unique):
                return Assignment(self, handle, function.decode(), unique, data)
            # Someone else's client made it (ours refuse such keys): never run.
            logger.warning("job %r[%r] refused: its key has control characters", function, unique)
            self._write(encode(Command.WORK_FAIL, handle))

    async def sleep(self, wait: float) -> None:
        """PRE_SLEEP, then wait for gearmand's NOOP (work is queued) or ``wait`` seconds."""
        self._wake.clear()
        self._write(encode(Command.PRE_SLEEP))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), wait)

    def wake(self) -> None:
        """End a :meth:`sleep` now (the runner has room for a job again); loop thread only."""
        self._wake.set()

    # -- a job's packets (Assignment.send / send_last) ------------------------------------
    def send(self, command: Command, *args: bytes | str | int) -> None:
        """Send a packet, from any thread; dropped once the connection is gone."""
        data = encode(command, *args)
        if threading.get_ident() == self._thread:
            self._write(data)
        elif self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._write, data)

    def defer(self, command: Command, *args: bytes | str | int) -> None:
        """As :meth:`send`: this connection has no next request to carry it."""
        self.send(command, *args)

    def flush(self) -> None:
        """Nothing waits to be sent here (for the blocking connection's interface)."""

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        self._drop(ConnectionFailed(str(self.address), "connection closed"))
