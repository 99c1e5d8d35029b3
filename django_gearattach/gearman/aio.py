"""asyncio Gearman client: one connection per server per event loop, many jobs on each.

Replies to requests come back in the order the requests were sent, so they are
matched first-in first-out; WORK_* packets are matched by job handle. A second
attachment to the same (function, unique) on one connection shares the first one's
gearmand attachment, because gearmand would otherwise send every event twice.

The attachments stay on the connection until their jobs end, whoever is still
listening, so leaving never makes gearmand drop a queued job. When the connection is
closed on purpose (``close()``, or its event loop shutting down) while it holds
attachments to unfinished jobs, they are first joined from a blocking connection
that :mod:`.linger` keeps until they have started.
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from . import linger
from .client import UniqueStatus, WorkEvent, event_from_packet, raise_for_error
from .errors import ConnectionFailed, GearmanError
from .protocol import Command, Packet, PacketParser, Priority, check_unique, encode, submit_command
from .rendezvous import Address


@dataclass(eq=False)
class _Shared:
    """One gearmand attachment, fanned out to local subscribers."""

    function: str
    unique: bytes
    data: bytes = b""
    priority: Priority | str = Priority.NORMAL
    handle: bytes = b""
    subscribers: set[asyncio.Queue[WorkEvent | BaseException]] = field(default_factory=set)
    finished: bool = False
    #: An event has arrived, or gearmand said the job runs: it is not queued.
    started: bool = False

    def publish(self, item: WorkEvent | BaseException) -> None:
        for queue in self.subscribers:
            queue.put_nowait(item)


@dataclass(eq=False)
class _Pending:
    future: asyncio.Future[Packet]
    shared: _Shared | None = None
    sent_at: float = 0.0


class AsyncConnection:
    def __init__(self, address: Address, timeout: float | None = 10.0) -> None:
        self.address = address
        self.timeout = timeout
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._task: asyncio.Task[None] | None = None
        self._pending: deque[_Pending] = deque()
        self._by_handle: dict[bytes, _Shared] = {}
        self._shared: dict[tuple[str, bytes], _Shared] = {}
        self._connect_lock = asyncio.Lock()
        self._outbox: list[bytes] = []
        self._watchdog: asyncio.TimerHandle | None = None

    @property
    def connected(self) -> bool:
        return self._writer is not None and not self._writer.is_closing()

    async def connect(self) -> None:
        if self._writer is not None and not self._writer.is_closing():
            return  # every request calls this: skip the lock when connected
        async with self._connect_lock:
            if self.connected:
                return
            try:
                self._reader, self._writer = await asyncio.wait_for(
                    asyncio.open_connection(self.address.host, self.address.port), self.timeout
                )
            except (OSError, TimeoutError) as exc:
                raise ConnectionFailed(str(self.address), f"cannot connect ({exc})") from exc
            self._task = asyncio.create_task(self._read_loop(), name=f"gearman {self.address}")
            future: asyncio.Future[Packet] = asyncio.get_running_loop().create_future()
            self._enqueue(_Pending(future))
            self._outbox.clear()
            self._write(encode(Command.OPTION_REQ, b"exceptions"))
        await self._wait(future)

    async def _read_loop(self) -> None:
        assert self._reader is not None
        parser = PacketParser()
        error: GearmanError
        try:
            while True:
                data = await self._reader.read(256 * 1024)
                if not data:
                    error = ConnectionFailed(str(self.address), "server closed the connection")
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
            # Closed on purpose, or its event loop is shutting down (asyncio.run ends).
            self._hand_off()
            error = ConnectionFailed(str(self.address), "connection closed")
        self._fail_all(error)

    def _write(self, data: bytes) -> None:
        # Requests made in one turn of the event loop leave in one send(): under load
        # this saves a system call and a gearmand wake-up per request.
        if not self._outbox:
            asyncio.get_running_loop().call_soon(self._flush)
        self._outbox.append(data)

    def _flush(self) -> None:
        data, self._outbox = b"".join(self._outbox), []
        if self._writer is not None and data:
            self._writer.write(data)

    def _dispatch(self, packet: Packet) -> None:
        event = event_from_packet(packet)
        if event is not None:
            shared = self._by_handle.get(event.handle)
            if shared is None:
                return
            if event.terminal:
                shared.finished = True
                self._by_handle.pop(event.handle, None)
                self._shared.pop((shared.function, shared.unique), None)
            else:
                shared.started = True
            shared.publish(event)
            return
        if packet.command is Command.NOOP or not self._pending:
            return
        pending = self._pending.popleft()
        if packet.command is Command.JOB_CREATED and pending.shared is not None:
            pending.shared.handle = packet.args[0]
            self._by_handle[pending.shared.handle] = pending.shared
        if not pending.future.done():
            pending.future.set_result(packet)

    def _fail_all(self, error: GearmanError) -> None:
        self._outbox.clear()
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.close()
        while self._pending:
            pending = self._pending.popleft()
            if not pending.future.done():
                pending.future.set_exception(error)
        for shared in list(self._shared.values()):
            shared.publish(error)
        self._shared.clear()
        self._by_handle.clear()

    async def _wait(self, future: asyncio.Future[Packet]) -> Packet:
        packet = await future
        raise_for_error(packet)
        return packet

    def _enqueue(self, pending: _Pending) -> None:
        loop = asyncio.get_running_loop()
        pending.sent_at = loop.time()
        self._pending.append(pending)
        if self._watchdog is None and self.timeout is not None:
            self._watchdog = loop.call_later(self.timeout, self._check_timeouts)

    def _check_timeouts(self) -> None:
        # Replies come in request order, so only the oldest request can be overdue:
        # one timer per connection instead of one per request.
        self._watchdog = None
        if not self._pending or self.timeout is None:
            return
        loop = asyncio.get_running_loop()
        overdue = loop.time() - self._pending[0].sent_at - self.timeout
        if overdue >= 0:
            self._fail_all(
                ConnectionFailed(str(self.address), f"no reply within {self.timeout} s")
            )
            return
        self._watchdog = loop.call_later(-overdue, self._check_timeouts)

    def _forget(self, shared: _Shared) -> None:
        if self._shared.get((shared.function, shared.unique)) is shared:
            del self._shared[(shared.function, shared.unique)]
        if self._by_handle.get(shared.handle) is shared:
            del self._by_handle[shared.handle]

    def _hand_off(self) -> None:
        """Let :mod:`.linger` hold the unfinished jobs this connection is attached to."""
        jobs = [
            (s.function, s.unique, s.data, s.priority)
            for s in self._shared.values()
            if s.handle and not s.finished
        ]
        if not jobs or not self.connected:
            return
        try:
            linger.adopt(self.address, jobs, self.timeout)
        except GearmanError as exc:
            # gearmand is unreachable, so this connection's attachments go with it anyway.
            linger.logger.warning("could not hand %s attachments to linger: %s", len(jobs), exc)

    async def _request(
        self, command: Command, *args: bytes | str | int, shared: _Shared | None = None
    ) -> Packet:
        await self.connect()
        assert self._writer is not None
        future: asyncio.Future[Packet] = asyncio.get_running_loop().create_future()
        self._enqueue(_Pending(future, shared))
        self._write(encode(command, *args))
        return await self._wait(future)

    async def _pipeline(
        self, *requests: tuple[Command, tuple[bytes | str | int, ...], _Shared | None]
    ) -> list[Packet]:
        """Several requests in one write; their replies, in order (the first error raised)."""
        await self.connect()
        loop = asyncio.get_running_loop()
        futures = []
        for command, args, shared in requests:
            future: asyncio.Future[Packet] = loop.create_future()
            self._enqueue(_Pending(future, shared))
            self._write(encode(command, *args))
            futures.append(future)
        packets = await asyncio.gather(*futures, return_exceptions=True)
        out = []
        for packet in packets:
            if isinstance(packet, BaseException):
                raise packet
            raise_for_error(packet)
            out.append(packet)
        return out

    async def submit_background(
        self, function: str, unique: bytes, data: bytes, priority: Priority | str = Priority.NORMAL
    ) -> bytes:
        check_unique(unique)
        packet = await self._request(
            submit_command(priority, background=True), function, unique, data
        )
        return packet.args[0]

    async def submit_epoch(self, function: str, unique: bytes, epoch: int, data: bytes) -> bytes:
        """Submit a background job that gearmand hands out at ``epoch`` (Unix seconds)."""
        check_unique(unique)
        packet = await self._request(Command.SUBMIT_JOB_EPOCH, function, unique, int(epoch), data)
        return packet.args[0]

    async def status_unique(self, unique: bytes) -> UniqueStatus:
        check_unique(unique)
        return UniqueStatus.from_packet(await self._request(Command.GET_STATUS_UNIQUE, unique))

    async def echo(self, payload: bytes = b"ping") -> bytes:
        return (await self._request(Command.ECHO_REQ, payload)).args[0]

    @contextlib.asynccontextmanager
    async def foreground(
        self, function: str, unique: bytes, data: bytes, priority: Priority | str = Priority.NORMAL
    ) -> AsyncIterator[AsyncIterator[WorkEvent]]:
        """Join (or submit) a foreground job; the body iterates its events.

        Leaving the body early only drops this subscriber: the gearmand attachment
        stays on the shared connection until the job ends, so leaving never makes
        gearmand drop a queued job.
        """
        follow = await self.follow(function, unique, data, priority, status=False)
        try:
            yield follow.events()
        finally:
            follow.leave()

    async def follow(
        self,
        function: str,
        unique: bytes,
        data: bytes,
        priority: Priority | str = Priority.NORMAL,
        *,
        status: bool = True,
    ) -> Follow:
        """Subscribe to a job's events, joining (or submitting) it in the foreground.

        With ``status``, ``GET_STATUS_UNIQUE`` and ``SUBMIT_JOB`` leave in one write,
        and ``Follow.status`` tells whether the submit joined a job gearmand knew.
        When this connection already holds an attachment to the job, it is shared and
        nothing is sent (``Follow.status`` is then ``None``). Call ``leave()`` when done.
        """
        check_unique(unique)
        queue: asyncio.Queue[WorkEvent | BaseException] = asyncio.Queue()
        shared = self._shared.get((function, unique))
        before = None
        if shared is None or shared.finished:
            shared = _Shared(function, unique, data, priority)
            shared.subscribers.add(queue)
            self._shared[(function, unique)] = shared
            submit = (submit_command(priority, background=False), (function, unique, data), shared)
            try:
                if status:
                    reply, _ = await self._pipeline(
                        (Command.GET_STATUS_UNIQUE, (unique,), None), submit
                    )
                    before = UniqueStatus.from_packet(reply)
                    shared.started = shared.started or before.running
                else:
                    await self._pipeline(submit)
            except BaseException:
                shared.subscribers.discard(queue)
                if self._shared.get((function, unique)) is shared and not shared.handle:
                    del self._shared[(function, unique)]
                raise
        else:
            shared.subscribers.add(queue)
        return Follow(self, shared, queue, before)

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._fail_all(ConnectionFailed(str(self.address), "connection closed"))

    def attachment_count(self) -> int:
        return len(self._shared)


class Follow:
    """One subscriber's view of an attachment: its events, and what is known of the job."""

    def __init__(
        self,
        connection: AsyncConnection,
        shared: _Shared,
        queue: asyncio.Queue[WorkEvent | BaseException],
        status: UniqueStatus | None,
    ) -> None:
        self.connection = connection
        self._shared = shared
        self._queue = queue
        #: The job as gearmand knew it just before this attachment (None: not asked).
        self.status = status

    @property
    def started(self) -> bool:
        """The job has sent an event, or gearmand said it runs."""
        return self._shared.started

    def mark_started(self) -> None:
        self._shared.started = True

    def forget(self) -> None:
        """Stop routing events to this attachment (gearmand no longer knows its job)."""
        self._shared.finished = True
        self.connection._forget(self._shared)

    def leave(self) -> None:
        """Unsubscribe; the gearmand attachment stays until the job ends."""
        self._shared.subscribers.discard(self._queue)

    def events(self) -> AsyncIterator[WorkEvent]:
        return _iterate(self._queue)

    async def next_event(self, timeout: float | None = None) -> WorkEvent | None:
        """The next event; ``None`` after ``timeout`` seconds of silence."""
        if not self._queue.empty():  # a stream's chunks queue up: no timer for those
            item = self._queue.get_nowait()
        else:
            try:
                async with asyncio.timeout(timeout):
                    item = await self._queue.get()
            except TimeoutError:
                return None
        if isinstance(item, BaseException):
            raise item
        return item


async def _iterate(queue: asyncio.Queue[WorkEvent | BaseException]) -> AsyncIterator[WorkEvent]:
    while True:
        item = await queue.get()
        if isinstance(item, BaseException):
            raise item
        yield item
        if item.terminal:
            return


class AsyncClient:
    """Hands out one :class:`AsyncConnection` per server per running event loop."""

    def __init__(self, timeout: float | None = 10.0) -> None:
        self.timeout = timeout
        self._pools: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, dict[Address, AsyncConnection]
        ] = weakref.WeakKeyDictionary()

    def connection(self, address: Address) -> AsyncConnection:
        loop = asyncio.get_running_loop()
        pool = self._pools.setdefault(loop, {})
        conn = pool.get(address)
        if conn is None:
            conn = pool[address] = AsyncConnection(address, self.timeout)
        return conn

    def connections(self) -> list[AsyncConnection]:
        with contextlib.suppress(RuntimeError):
            return list(self._pools.get(asyncio.get_running_loop(), {}).values())
        return []

    async def close(self) -> None:
        pool = self._pools.pop(asyncio.get_running_loop(), {})
        for conn in pool.values():
            await conn.close()
