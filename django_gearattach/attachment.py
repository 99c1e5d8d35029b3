"""``attach``/``aattach``: follow a job by (function, key) until its outcome.

Everything that happens to a job is pushed to its attachers by gearmand; nothing
between submit and outcome waits on a timer. The guarantees (each proven by a test
against real gearmand):

* A finished job answers from its record at once; nothing runs again.
* An active job is joined at once with a foreground submit whose data is the attach
  marker, sent in one write with a ``GET_STATUS_UNIQUE``. Workers send an empty
  ``WORK_DATA`` when a job starts, so a queued job's attachers hear it start, then
  its progress and its end. If the job ended before the submit landed, the marker
  becomes a job of its own, which is dropped (or, on the async path, answered by a
  worker from the record, where outcomes are committed before gearmand hears of
  them): it still runs exactly once.
* An attacher that leaves before its job started never makes gearmand drop it: the
  sync client parks its connection with :mod:`~.gearman.linger` until the job runs;
  the async client's attachments stay on the event loop's connection, and are handed
  to linger if that connection closes first. A process killed meanwhile leaves the
  job to the workers' recovery sweep (:mod:`~django_gearattach.worker.recovery`).
* A job that gearmand forgot while its record says queued or running (a restarted
  server, a submitter that died) is revived by the attacher's marker: the worker
  runs it from the stored arguments. A scheduled job is joined like a queued one;
  a marker that reaches a worker before the record's time puts the job back for
  that time (:meth:`~django_gearattach.worker.loop.Worker.handle`), so it never runs early.
* A job that ends its run to run again later (a Celery retry) is followed into that
  run: its record is waiting again when gearmand reports the end. So is a run that
  failed with a follow-up waiting, and a run replaced by a newer submit (latest wins,
  :mod:`~django_gearattach.runs`), whose attachers first hear ``superseded``; the
  attachers of a run that completed with a follow-up waiting get its result.
* An unknown key raises :class:`~django_gearattach.exceptions.JobNotFound` and
  creates nothing.
* The outcome an attacher reports is the record's, read when gearmand says the job
  ended: any host on gearmand's network can answer a job it took with a packet of its
  own, and a record that does not say the job ended means that end was not this site's
  (the attacher follows the job on). Progress, data and warnings are relayed from
  gearmand as they come: the widget shows them as text.
* A job's stream (``job.stream(chunk)``) is given out from the caller's position
  (``after=``): the chunks its record keeps, then the live ones, with no gap and no
  duplicate, a new run's after a ``restart`` (:mod:`~django_gearattach.attach_streams`).
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import AsyncIterator, Callable, Generator, Iterator
from dataclasses import dataclass
from typing import Any, Literal, ParamSpec

from asgiref.sync import sync_to_async

from . import presence, records, runs, streams
from .attach_streams import StreamCursor
from .attach_timing import atimed, timed
from .batching import Batcher
from .clients import get_async_client, get_client, servers_for
from .conf import conf
from .exceptions import AttachTimeout, JobNotFound, NoWorker
from .gearman.aio import Follow
from .gearman.client import Client, ForegroundJob, WorkEvent
from .gearman.errors import ConnectionFailed
from .gearman.rendezvous import Address, parse_cached
from .models import Job, Status
from .payload import ATTACH_MARKER, check_key, decode_result
from .submission import send_successor
from .tasks import Task, function_name

P = ParamSpec("P")
EventName = Literal[
    "started",
    "unserved",
    "served",
    "status",
    "data",
    "warning",
    "complete",
    "failed",
    "superseded",
    "chunk",
    "restart",
]


@dataclass(frozen=True, slots=True)
class JobEvent:
    """What an attacher receives. ``complete`` and ``failed`` end the stream.

    ``started`` says that a job the attacher saw queued has been started by a worker
    (it comes again if a worker dies and another starts the job over). ``unserved``
    says that no worker registers the job's function on the server that holds it, so
    the job waits until one does (``message`` says so); ``served``, after it, that one
    has registered since. Neither ends the stream. ``superseded`` says that the run
    followed so far was replaced by a newer one (latest wins), which the attacher
    follows from now on: its progress starts over.

    ``chunk`` is one chunk of the job's stream (``run``, ``seq``, ``data``); ``restart``
    says that the stream starts over with run ``run`` (a new run of the job): discard
    the chunks shown so far.
    """

    event: EventName
    numerator: int | None = None
    denominator: int | None = None
    data: Any = None
    message: str | None = None
    result: Any = None
    error: str | None = None
    run: int | None = None
    seq: int | None = None

    @property
    def terminal(self) -> bool:
        return self.event in ("complete", "failed")

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"event": self.event}
        if self.event == "status":
            out.update(numerator=self.numerator, denominator=self.denominator)
        elif self.event == "data":
            out["data"] = self.data
        elif self.event == "chunk":
            out.update(run=self.run, seq=self.seq, data=self.data)
        elif self.event == "restart":
            out["run"] = self.run
        elif self.event in ("warning", "unserved"):
            out["message"] = self.message
        elif self.event == "complete":
            out["result"] = self.result
        elif self.event == "failed":
            out["error"] = self.error
        return out


def outcome_of(record: Job) -> JobEvent:
    if record.status == Status.COMPLETE:
        return JobEvent("complete", result=record.result)
    return JobEvent("failed", error=record.failure_text)


def _translate(event: WorkEvent) -> JobEvent:
    if event.kind == "started":
        return JobEvent("started")
    if event.kind == "status":
        return JobEvent("status", numerator=event.numerator, denominator=event.denominator)
    if event.kind == "data":
        return JobEvent("data", data=decode_result(event.data))
    if event.kind == "warning":
        return JobEvent("warning", message=event.data.decode("utf-8", "replace"))
    if event.kind == "complete":
        return JobEvent("complete", result=decode_result(event.data))
    if event.kind == "exception":
        return JobEvent("failed", error=event.data.decode("utf-8", "replace"))
    return JobEvent("failed", error="the job failed (WORK_FAIL)")


#: Seconds for which a record just read or written (``submit`` returns one) is
#: trusted. An older one may be stale (its job may have ended since), so
#: ``attach(job)`` reads it again before asking gearmand: one SELECT, instead of an
#: attach marker that the sync path would then drop, or a worker answer (async path).
FRESH_FOR = 0.005


def _stale(record: Job) -> bool:
    return not records.read_within(record, FRESH_FOR)


#: What attach reads of a record (the rest is deferred): converting every column of
#: the row cost more CPU than the query.
_FIELDS = (
    "function",
    "key",
    "status",
    "priority",
    "server",
    "result",
    "error",
    "run_number",
    "run_reason",
    "next_reason",
    "previous_result",
    "previous_run_number",
    "stream_run",
    "stream_seq",
)


def _load(function: str, key: str) -> Job | None:
    return records.get(function, key, _FIELDS)


def _load_many(targets: list[tuple[str, str]]) -> list[Job | BaseException | None]:
    return list(records.load(targets))


_load_batched: Batcher[tuple[str, str], Job | None] = Batcher(_load_many)


def _addresses(record: Job | None, function: str, key: str) -> list[Address]:
    ordered = servers_for(function, key)
    if record is not None and record.server:
        home = parse_cached(record.server)
        return [home, *(a for a in ordered if a != home)]
    return ordered


def unserved_text(function: str, address: Address | str) -> str:
    return (
        f"no worker is running for {function!r} on {address}: the job waits in the queue "
        "until one starts (manage.py gearworker)"
    )


class _Clock:
    """The attach call's deadline, its retry back-off, the next liveness check, and
    what the job is known to wait for (a worker to start it, or its end)."""

    def __init__(self, timeout: float | None) -> None:
        self.deadline = None if timeout is None else time.monotonic() + timeout
        self.delay = conf.RETRY_INTERVAL
        #: Whether a worker has started the job, as far as this attacher knows.
        self.started = False
        #: Whether to ask which workers there are while the job waits (not for a job
        #: scheduled for later, which waits for its time).
        self.watch_workers = True
        #: The server on which no worker registers the function (None: some do, or
        #: nobody has looked).
        self.unserved_on: Address | None = None
        self.function = ""

    def expired(self) -> AttachTimeout:
        if self.unserved_on is not None:
            return NoWorker(
                f"the job did not start in time: {unserved_text(self.function, self.unserved_on)}"
            )
        if not self.started:
            return AttachTimeout(
                "the job did not start in time: it is still queued, and runs when a worker is free"
            )
        return AttachTimeout("the job did not finish in time; it keeps running")

    def remaining(self) -> float | None:
        if self.deadline is None:
            return None
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise self.expired()
        return left

    def backoff(self) -> float:
        """The next pause before a retry (after a lost connection)."""
        delay = self.delay
        self.delay = min(self.delay * 2, conf.RETRY_INTERVAL_MAX)
        left = self.remaining()
        return delay if left is None else min(delay, left)

    def wait(self, started: bool, check_at: float) -> float | None:
        """How long to wait for the next event before looking at the clock again."""
        left = self.remaining()
        if started:
            return left
        until_check = max(check_at - time.monotonic(), 0.0)
        return until_check if left is None else min(left, until_check)

    def saw_workers(self, count: int | None, function: str, address: Address) -> JobEvent | None:
        """``unserved``/``served`` when whether a worker registers the function changed."""
        self.function = function
        if count is None:
            return None  # the server did not answer: nothing new is known
        if count == 0 and self.unserved_on is None:
            self.unserved_on = address
            return JobEvent("unserved", message=unserved_text(function, address))
        if count and self.unserved_on is not None:
            self.unserved_on = None
            return JobEvent("served")
        return None

    def saw(self, event: JobEvent) -> None:
        if event.event in ("started", "status", "data", "warning", "chunk", "restart"):
            self.started = True
            self.unserved_on = None  # a worker has it


def _target(
    job: Job | Task[Any, Any] | str, key: str | None
) -> tuple[str, str, bytes, Job | None]:
    if isinstance(job, Job):
        return job.function, job.key, check_key(job.key), job
    if key is None:
        raise TypeError("attach(function, key) needs a key (or pass the Job record alone)")
    return function_name(job), key, check_key(key), None


def _not_found(answered: bool, function: str, key: str) -> Exception:
    """No record and no gearmand job; or, when no server answered, we cannot tell."""
    if not answered:
        servers = ",".join(map(str, _addresses(None, function, key)))
        return ConnectionFailed(servers, "no gearmand answered, so the job's state is unknown")
    return JobNotFound(function, key)


#: What :func:`_settled` returns when the run followed was replaced by a newer one.
SUPERSEDED = JobEvent("superseded")


def _settled(
    function: str,
    key: str,
    record: Job | None,
    recorded: bool,
    packet: JobEvent,
    followed: int | None = None,
) -> JobEvent | None:
    """The outcome to report once gearmand says the job ended: the record's, never the
    packet's; None when the record does not say it ended.

    Workers commit a job's outcome before gearmand hears of it, so a record that is
    not finished when gearmand reports the end means that run's end was not this
    site's: a job put back to run later (a Celery retry, a scheduled time), a copy that
    lost its claim, or a packet forged by another host on gearmand's network (which
    anyone there can send: Gearman has no authentication). The attacher follows the
    job again. Only a job that had no record when the attach began, run by a worker that
    keeps none (a foreign client's), is reported as gearmand told it.

    ``followed`` is the number of the run the attacher followed. A record whose current
    run came after it (:mod:`~django_gearattach.runs`) answers :data:`SUPERSEDED` when a
    newer submit replaced that run (the attacher follows the new one), and the result
    it kept of that run when it completed with a follow-up waiting.
    """
    if record is None:
        if recorded:
            raise JobNotFound(function, key)  # deleted while it ran
        return packet
    if record.is_finished:
        return outcome_of(record)
    if followed is not None and record.run_number > followed:
        if runs.supersedes(record):
            return SUPERSEDED
        if record.previous_run_number == followed:
            return JobEvent("complete", result=record.previous_result)
    return None


def _reread(function: str, key: str) -> Job | None:
    """The record once gearmand says the run ended; a finished record with a run waiting
    (ended by a path that left it unstarted) starts that run first, once."""
    record = _load(function, key)
    if record is not None and record.is_finished and record.next_reason:
        promoted = runs.promote(record)
        if promoted is not None:
            send_successor(promoted)
        record = _load(function, key)
    return record


def _run_of(record: Job | None) -> int | None:
    return record.run_number if record is not None else None


# -- sync ----------------------------------------------------------------------------


def _traced(func: Callable[P, Iterator[JobEvent]]) -> Callable[P, Iterator[JobEvent]]:
    """With GEARATTACH["TRACING"], an attach call records a span (tracing/attaching.py)."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> Iterator[JobEvent]:
        if not conf.TRACING:
            return func(*args, **kwargs)
        from .tracing.attaching import traced

        return traced(func, args, kwargs)

    return wrapper


def _atraced(func: Callable[P, AsyncIterator[JobEvent]]) -> Callable[P, AsyncIterator[JobEvent]]:
    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> AsyncIterator[JobEvent]:
        if not conf.TRACING:
            return func(*args, **kwargs)
        from .tracing.attaching import atraced

        return atraced(func, args, kwargs)

    return wrapper


@_traced
@timed
def attach(
    job: Job | Task[Any, Any] | str,
    key: str | None = None,
    *,
    timeout: float | None = None,
    after: int | str | tuple[int, int] | None = None,
) -> Iterator[JobEvent]:
    """Yield the job's events until ``complete`` or ``failed``.

    Call it as ``attach(function, key)`` or with a record, ``attach(job)`` (which
    saves reading the record first). Raises :class:`JobNotFound` for an unknown key
    and :class:`AttachTimeout` when ``timeout`` seconds pass first (the job itself
    keeps running, or stays queued): :class:`NoWorker` when no worker registers the
    job's function, so it never started.

    The job's stream comes as ``chunk`` events from the start, or after ``after``: the
    last chunk the caller holds, ``"R:N"`` or ``(R, N)`` (run R, seq N), or an int N
    (seq N of the current run). A malformed ``after`` raises ValueError.
    """
    name, key, unique, record = _target(job, key)
    cursor = StreamCursor(name, key, after, JobEvent)
    client = get_client()
    clock = _Clock(timeout)
    if record is None or (record.is_active and _stale(record)):
        record = _load(name, key)
        if record is None and (conf.IMMEDIATE or isinstance(job, Job)):
            raise JobNotFound(name, key)  # a deleted record, or immediate mode (all recorded)
    while True:
        if record is not None:
            yield from cursor.from_record(record)
        if record is not None and record.is_finished:
            yield outcome_of(record)
            return
        joined: ForegroundJob | Job | None
        clock.watch_workers = record is None or record.status != Status.SCHEDULED
        recorded = record is not None
        if record is None:
            joined = _join_unrecorded(client, name, key, unique, clock)
        else:
            joined = _join(client, record, name, key, unique)
        if isinstance(joined, Job):
            record = joined
            continue
        if joined is not None:
            with joined:
                try:
                    followed = _run_of(record)
                    relayed = _relay(
                        client, joined, name, key, unique, clock, recorded, followed, cursor
                    )
                    if (yield from relayed):
                        return
                except ConnectionFailed:
                    pass
        time.sleep(clock.backoff())
        record = _load(name, key)


def _join(
    client: Client, record: Job, name: str, key: str, unique: bytes
) -> ForegroundJob | Job | None:
    """Attach to an active record's job; the record re-read if gearmand knows no job.

    ``None`` when no server answered.
    """
    candidate: ForegroundJob | None = None
    try:
        for address in _addresses(record, name, key):
            try:
                if candidate is not None and not client.status_unique(address, unique).known:
                    continue
                stream = client.follow(address, name, unique, ATTACH_MARKER, record.priority)
            except ConnectionFailed:
                continue
            assert stream.status is not None
            if stream.status.known:
                if candidate is not None:
                    candidate.abandon()
                return stream
            if candidate is None:
                candidate = stream  # a marker job of our own: the job may have ended
            else:
                stream.abandon()
        if candidate is None:
            return None
        fresh = _load(name, key)
    except BaseException:
        if candidate is not None:
            candidate.abandon()
        raise
    if fresh is None or fresh.is_finished:
        candidate.abandon()  # the marker carries no work: letting gearmand drop it is right
        if fresh is None:
            raise JobNotFound(name, key)
        return fresh
    return candidate  # gearmand forgot the job: the marker revives it from the record


def _join_unrecorded(
    client: Client, name: str, key: str, unique: bytes, clock: _Clock
) -> ForegroundJob | Job:
    """A job without a record: one that another client submitted and no worker started.

    Holding it in the foreground while it is queued could make gearmand drop it with
    nothing to revive it from, so it is watched with ``GET_STATUS_UNIQUE`` until a
    worker starts it (and records it).
    """
    while True:
        answered, running = False, None
        for address in servers_for(name, key):
            try:
                status = client.status_unique(address, unique)
            except ConnectionFailed:
                continue
            answered = True
            if status.known:
                running = address if status.running else None
                break
        else:
            record = _load(name, key)  # a worker may have recorded and finished it
            if record is not None:
                return record
            raise _not_found(answered, name, key)
        if running is not None:
            stream = client.follow(running, name, unique, ATTACH_MARKER)
            assert stream.status is not None
            if stream.status.known:
                return stream
            stream.abandon()  # it ended meanwhile: the next round reads its record
            continue
        time.sleep(clock.backoff())


def _relay(
    client: Client,
    stream: ForegroundJob,
    name: str,
    key: str,
    unique: bytes,
    clock: _Clock,
    recorded: bool,
    followed: int | None = None,
    cursor: StreamCursor | None = None,
) -> Generator[JobEvent, None, bool]:
    """Yield the stream's events; True after the terminal one, False if its job vanished.

    While the job waits to start, it also says whether a worker registers its function
    (``unserved``/``served``): at once, and at each liveness check.
    """
    address = stream.conn.address
    check_at = time.monotonic() + conf.CHECK_INTERVAL
    if not stream.started and clock.watch_workers:
        look = clock.saw_workers(presence.workers(name, [address]), name, address)
        if look is not None:
            yield look
    while True:
        clock.started = clock.started or stream.started
        wait = clock.wait(stream.started, check_at)
        event = stream.next_event(wait if cursor is None else cursor.wait(wait))
        if event is None:
            clock.remaining()
            if cursor is not None and cursor.due():
                yield from cursor.recheck()
            if not stream.started and time.monotonic() >= check_at:
                check_at = time.monotonic() + conf.CHECK_INTERVAL
                try:
                    status = client.status_unique(address, unique)
                except ConnectionFailed:
                    continue
                if status.running:
                    stream.started = True
                elif not status.known:
                    # Joined a job that gearmand dropped since (an attacher before us
                    # was killed): nothing will come on this connection.
                    stream.abandon()
                    return False
                elif clock.watch_workers:
                    look = clock.saw_workers(presence.workers(name, [address]), name, address)
                    if look is not None:
                        yield look
            continue
        if cursor is not None and event.kind == "data" and streams.is_stream_packet(event.data):
            for chunk in cursor.live(event.data):
                clock.saw(chunk)
                yield chunk
            continue
        translated = _translate(event)
        clock.saw(translated)
        if translated.terminal:
            record = _reread(name, key)
            settled = _settled(name, key, record, recorded, translated, followed)
            if cursor is not None and record is not None and record.is_finished:
                yield from cursor.from_record(record)  # chunks that did not come live
            if settled is SUPERSEDED:
                clock.started = False  # the new run starts over (it may be queued)
                yield settled
            if settled is None or settled is SUPERSEDED:
                return False  # not this run's end, or it runs again: follow the job on
            translated = settled
        yield translated
        if translated.terminal:
            return True


# -- async ---------------------------------------------------------------------------


@_atraced
@atimed
async def aattach(
    job: Job | Task[Any, Any] | str,
    key: str | None = None,
    *,
    timeout: float | None = None,
    after: int | str | tuple[int, int] | None = None,
) -> AsyncIterator[JobEvent]:
    """The async twin of :func:`attach`, on the event loop's shared connections.

    Many attachers of one job in one event loop share one gearmand attachment.
    """
    name, key, unique, record = _target(job, key)
    cursor = StreamCursor(name, key, after, JobEvent)
    clock = _Clock(timeout)
    if record is None or (record.is_active and _stale(record)):
        record = await _load_batched((name, key))
        if record is None and (conf.IMMEDIATE or isinstance(job, Job)):
            raise JobNotFound(name, key)  # a deleted record, or immediate mode (all recorded)
    while True:
        if record is not None:
            for replayed in await cursor.afrom_record(record):
                yield replayed
        if record is not None and record.is_finished:
            yield outcome_of(record)
            return
        joined: Follow | Job | None
        clock.watch_workers = record is None or record.status != Status.SCHEDULED
        recorded = record is not None
        if record is None:
            joined = await _ajoin_unrecorded(name, key, unique, clock)
        else:
            joined = await _ajoin(record, name, key, unique)
        if isinstance(joined, Job):
            record = joined
            continue
        if joined is not None:
            try:
                followed = _run_of(record)
                relayed = _arelay(joined, name, key, unique, clock, recorded, followed, cursor)
                async for event in relayed:
                    yield event
                    if event.terminal:
                        return
            except ConnectionFailed:
                pass
            finally:
                joined.leave()
        await asyncio.sleep(clock.backoff())
        record = await _load_batched((name, key))


async def _ajoin(record: Job, name: str, key: str, unique: bytes) -> Follow | Job | None:
    """:func:`_join` on the event loop's shared connections.

    A marker job created here cannot be dropped by closing a connection (it is
    shared), so when the job had ended it stays attached until a worker answers it
    from the record.
    """
    client = get_async_client()
    candidate: Follow | None = None
    for address in _addresses(record, name, key):
        conn = client.connection(address)
        try:
            if candidate is not None and not (await conn.status_unique(unique)).known:
                continue
            follow = await conn.follow(name, unique, ATTACH_MARKER, record.priority)
        except ConnectionFailed:
            continue
        if follow.status is None or follow.status.known:
            if candidate is not None:
                candidate.leave()
            return follow
        if candidate is None:
            candidate = follow
        else:
            follow.leave()
    if candidate is None:
        return None
    try:
        fresh = await _load_batched((name, key))
    except BaseException:
        candidate.leave()
        raise
    if fresh is None or fresh.is_finished:
        candidate.leave()
        if fresh is None:
            raise JobNotFound(name, key)
        return fresh
    return candidate


async def _ajoin_unrecorded(name: str, key: str, unique: bytes, clock: _Clock) -> Follow | Job:
    """:func:`_join_unrecorded` on the event loop's shared connections."""
    client = get_async_client()
    while True:
        answered, running = False, None
        for address in servers_for(name, key):
            try:
                status = await client.connection(address).status_unique(unique)
            except ConnectionFailed:
                continue
            answered = True
            if status.known:
                running = address if status.running else None
                break
        else:
            record = await _load_batched((name, key))
            if record is not None:
                return record
            raise _not_found(answered, name, key)
        if running is not None:
            follow = await client.connection(running).follow(name, unique, ATTACH_MARKER)
            if follow.status is None or follow.status.known:
                return follow
            follow.leave()
            continue
        await asyncio.sleep(clock.backoff())


async def _arelay(
    follow: Follow,
    name: str,
    key: str,
    unique: bytes,
    clock: _Clock,
    recorded: bool,
    followed: int | None = None,
    cursor: StreamCursor | None = None,
) -> AsyncIterator[JobEvent]:
    """The follow's events until the terminal one; stops early if its job vanished.

    Says whether a worker registers the function while the job waits, as :func:`_relay`.
    """
    address = follow.connection.address
    check_at = time.monotonic() + conf.CHECK_INTERVAL
    if not follow.started and clock.watch_workers:
        look = clock.saw_workers(await presence.aworkers(name, [address]), name, address)
        if look is not None:
            yield look
    while True:
        clock.started = clock.started or follow.started
        wait = clock.wait(follow.started, check_at)
        event = await follow.next_event(wait if cursor is None else cursor.wait(wait))
        if event is None:
            clock.remaining()
            if cursor is not None and cursor.due():
                for replayed in await cursor.arecheck():
                    yield replayed
            if not follow.started and time.monotonic() >= check_at:
                check_at = time.monotonic() + conf.CHECK_INTERVAL
                try:
                    status = await follow.connection.status_unique(unique)
                except ConnectionFailed:
                    continue
                if status.running:
                    follow.mark_started()
                elif not status.known:
                    follow.forget()  # joined a job gearmand dropped since
                    return
                elif clock.watch_workers:
                    count = await presence.aworkers(name, [address])
                    look = clock.saw_workers(count, name, address)
                    if look is not None:
                        yield look
            continue
        if cursor is not None and event.kind == "data" and streams.is_stream_packet(event.data):
            for chunk in await cursor.alive(event.data):
                clock.saw(chunk)
                yield chunk
            continue
        translated = _translate(event)
        clock.saw(translated)
        if translated.terminal:
            record = await _load_batched((name, key))
            if record is not None and record.is_finished and record.next_reason:
                record = await sync_to_async(_reread)(name, key)
            settled = _settled(name, key, record, recorded, translated, followed)
            if cursor is not None and record is not None and record.is_finished:
                for replayed in await cursor.afrom_record(record):
                    yield replayed  # chunks that did not come live
            if settled is SUPERSEDED:
                clock.started = False  # the new run starts over (it may be queued)
                yield settled
            if settled is None or settled is SUPERSEDED:
                return  # not this run's end, or it runs again: the caller follows the job
            translated = settled
        yield translated
        if translated.terminal:
            return
