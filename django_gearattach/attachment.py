"""``attach``/``aattach``: follow a job by (function, key) until its outcome.

The guarantees (each proven by a test against real gearmand):

* A finished job answers from its record at once; nothing runs again.
* A running job is joined with a foreground submit whose data is the attach marker;
  if it ends in between, the marker becomes a job of its own that a worker answers
  from the record (outcomes are committed before gearmand hears of them), so it still
  runs exactly once.
* A queued (or scheduled) job is watched with GET_STATUS_UNIQUE, never with a
  foreground attachment: gearmand drops a queued job whose last foreground client
  leaves.
* A job that gearmand forgot while its record says queued or running (a restarted
  server, a submitter that died) is revived with a background marker: the worker runs
  it from the stored arguments (a scheduled one at its stored time, never earlier).
* A job that ends its run to run again later (a Celery retry) is followed into
  that run: its record is waiting again when gearmand reports the end.
* An unknown key raises :class:`~django_gearattach.exceptions.JobNotFound` and
  creates nothing.
"""

from __future__ import annotations

import asyncio
import enum
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any, Literal

from asgiref.sync import sync_to_async

from . import records
from .attach_timing import atimed, timed
from .batching import Batcher
from .clients import get_async_client, get_client, servers_for
from .conf import conf
from .exceptions import AttachTimeout, JobNotFound
from .gearman.client import UniqueStatus, WorkEvent
from .gearman.errors import ConnectionFailed
from .gearman.routing import Address
from .models import Job, Status
from .payload import ATTACH_MARKER, check_key, decode_result
from .scheduling import pending_epoch
from .tasks import Task, function_name

EventName = Literal["status", "data", "warning", "complete", "failed"]


@dataclass(frozen=True, slots=True)
class JobEvent:
    """What an attacher receives. ``complete`` and ``failed`` end the stream."""

    event: EventName
    numerator: int | None = None
    denominator: int | None = None
    data: Any = None
    message: str | None = None
    result: Any = None
    error: str | None = None

    @property
    def terminal(self) -> bool:
        return self.event in ("complete", "failed")

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"event": self.event}
        if self.event == "status":
            out.update(numerator=self.numerator, denominator=self.denominator)
        elif self.event == "data":
            out["data"] = self.data
        elif self.event == "warning":
            out["message"] = self.message
        elif self.event == "complete":
            out["result"] = self.result
        else:
            out["error"] = self.error
        return out


def outcome_of(record: Job) -> JobEvent:
    if record.status == Status.COMPLETE:
        return JobEvent("complete", result=record.result)
    return JobEvent("failed", error=record.error or f"the job was {record.status}")


def _translate(event: WorkEvent) -> JobEvent:
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


class Step(enum.Enum):
    ANSWER = "answer from the record"
    FOLLOW = "join the running job"
    WAIT = "watch the queued job"
    REFRESH = "read the record again"


def decide(record: Job | None, status: UniqueStatus | None) -> Step:
    """The attach state machine, shared by the sync and async loops."""
    if record is not None and record.is_finished:
        return Step.ANSWER
    if status is not None and status.known:
        return Step.FOLLOW if status.running else Step.WAIT
    return Step.REFRESH


def _load(function: str, key: str) -> Job | None:
    return Job.objects.for_key(function, key).first()


def _load_many(targets: list[tuple[str, str]]) -> list[Job | BaseException | None]:
    return list(records.load(targets))


_load_batched: Batcher[tuple[str, str], Job | None] = Batcher(_load_many)


def _addresses(record: Job | None, function: str, key: str) -> list[Address]:
    ordered = servers_for(function, key)
    if record is not None and record.server:
        home = Address.parse(record.server)
        return [home, *(a for a in ordered if a != home)]
    return ordered


def _expired() -> AttachTimeout:
    return AttachTimeout("the job did not finish in time; it keeps running")


class _Clock:
    def __init__(self, timeout: float | None) -> None:
        self.deadline = None if timeout is None else time.monotonic() + timeout
        self.delay = conf.POLL_INTERVAL

    def remaining(self) -> float | None:
        if self.deadline is None:
            return None
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise _expired()
        return left

    def backoff(self) -> float:
        delay = self.delay
        self.delay = min(self.delay * 2, conf.POLL_INTERVAL_MAX)
        left = self.remaining()
        return delay if left is None else min(delay, left)


def _target(
    job: Job | Task[Any, Any] | str, key: str | None
) -> tuple[str, str, bytes, Job | None]:
    if isinstance(job, Job):
        return job.function, job.key, check_key(job.key), job
    if key is None:
        raise TypeError("attach(function, key) needs a key (or pass the Job record alone)")
    return function_name(job), key, check_key(key), None


@timed
def attach(
    job: Job | Task[Any, Any] | str, key: str | None = None, *, timeout: float | None = None
) -> Iterator[JobEvent]:
    """Yield the job's events until ``complete`` or ``failed``.

    Call it as ``attach(function, key)`` or with a record, ``attach(job)`` (which
    saves reading the record first). Raises :class:`JobNotFound` for an unknown key
    and :class:`AttachTimeout` when ``timeout`` seconds pass first (the job itself
    keeps running).
    """
    name, key, unique, record = _target(job, key)
    client = get_client()
    clock = _Clock(timeout)
    if record is None:
        record = _load(name, key)
        if record is None and conf.IMMEDIATE:
            raise JobNotFound(name, key)  # immediate mode: every job has a record
    if record is not None and record.is_waiting:
        time.sleep(clock.backoff())  # a queued job rarely starts this instant: ask later
    while True:
        status, address = None, None
        if decide(record, None) is not Step.ANSWER:
            for address in _addresses(record, name, key):
                try:
                    status = client.status_unique(address, unique)
                except ConnectionFailed:
                    continue
                if status.known:
                    break
        step = decide(record, status)
        if step is Step.ANSWER:
            assert record is not None
            yield outcome_of(record)
            return
        if step is Step.FOLLOW:
            assert address is not None
            try:
                stream = client.foreground(address, name, unique, ATTACH_MARKER)
            except ConnectionFailed:
                time.sleep(clock.backoff())
                continue
            with stream:
                try:
                    for event in stream.events(poll=0.25):
                        clock.remaining()
                        if event is None:
                            continue
                        translated = _translate(event)
                        if event.kind == "failed":
                            after = _outcome_after_fail(name, key)
                            if after is AGAIN:
                                break  # the job runs again later (a retry): keep following
                            translated = after or translated
                        yield translated
                        if translated.terminal:
                            return
                except ConnectionFailed:
                    pass
            time.sleep(clock.backoff())
            record = _load(name, key)
            continue
        if step is Step.WAIT:
            time.sleep(clock.backoff())
            continue
        record = _load(name, key)
        if record is None:
            raise _not_found(status, name, key)
        if record.is_active:
            _revive_sync(record, name, unique)
            time.sleep(clock.backoff())


def _not_found(status: UniqueStatus | None, function: str, key: str) -> Exception:
    """No record and no gearmand job; or, when no server answered, we cannot tell."""
    if status is None:
        servers = ",".join(map(str, _addresses(None, function, key)))
        return ConnectionFailed(servers, "no gearmand answered, so the job's state is unknown")
    return JobNotFound(function, key)


#: What :func:`_outcome_after_fail` returns for a job that will run again.
AGAIN = JobEvent("failed", error="the job runs again")


def _outcome_after_fail(function: str, key: str) -> JobEvent | None:
    """The stored outcome after WORK_FAIL; :data:`AGAIN` when the record waits for a rerun."""
    record = _load(function, key)
    if record is not None and record.is_waiting:
        return AGAIN
    return outcome_of(record) if record is not None and record.is_finished else None


def _revive_sync(record: Job, function: str, unique: bytes) -> None:
    client = get_client()
    epoch = pending_epoch(record.scheduled_for) if record.status == Status.SCHEDULED else None
    for address in _addresses(record, function, record.key):
        try:
            if epoch is not None:
                client.submit_epoch(address, function, unique, epoch, ATTACH_MARKER)
            else:
                client.submit_background(address, function, unique, ATTACH_MARKER, record.priority)
            return
        except ConnectionFailed:
            continue


@atimed
async def aattach(
    job: Job | Task[Any, Any] | str, key: str | None = None, *, timeout: float | None = None
) -> AsyncIterator[JobEvent]:
    """The async twin of :func:`attach`, on the event loop's shared connections.

    Many attachers of one job in one event loop share one gearmand attachment.
    """
    name, key, unique, record = _target(job, key)
    client = get_async_client()
    clock = _Clock(timeout)
    if record is None:
        record = await _load_batched((name, key))
        if record is None and conf.IMMEDIATE:
            raise JobNotFound(name, key)  # immediate mode: every job has a record
    if record is not None and record.is_waiting:
        await asyncio.sleep(clock.backoff())  # a queued job rarely starts this instant
    while True:
        status, address = None, None
        if decide(record, None) is not Step.ANSWER:
            for address in _addresses(record, name, key):
                try:
                    status = await client.connection(address).status_unique(unique)
                except ConnectionFailed:
                    continue
                if status.known:
                    break
        step = decide(record, status)
        if step is Step.ANSWER:
            assert record is not None
            yield outcome_of(record)
            return
        if step is Step.FOLLOW:
            assert address is not None
            try:
                async with asyncio.timeout(clock.remaining()):
                    async with client.connection(address).foreground(
                        name, unique, ATTACH_MARKER
                    ) as events:
                        async for event in events:
                            translated = _translate(event)
                            if event.kind == "failed":
                                after = await sync_to_async(_outcome_after_fail)(name, key)
                                if after is AGAIN:
                                    break  # the job runs again later (a retry)
                                translated = after or translated
                            yield translated
                            if translated.terminal:
                                return
            except ConnectionFailed:
                pass
            except TimeoutError:
                raise _expired() from None
            await asyncio.sleep(clock.backoff())
            record = await _load_batched((name, key))
            continue
        if step is Step.WAIT:
            await asyncio.sleep(clock.backoff())
            continue
        record = await _load_batched((name, key))
        if record is None:
            raise _not_found(status, name, key)
        if record.is_active:
            epoch = (
                pending_epoch(record.scheduled_for) if record.status == Status.SCHEDULED else None
            )
            for address in _addresses(record, name, key):
                server = client.connection(address)
                try:
                    if epoch is not None:
                        await server.submit_epoch(name, unique, epoch, ATTACH_MARKER)
                    else:
                        await server.submit_background(
                            name, unique, ATTACH_MARKER, record.priority
                        )
                    break
                except ConnectionFailed:
                    continue
            await asyncio.sleep(clock.backoff())
