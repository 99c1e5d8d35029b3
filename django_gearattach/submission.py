"""``submit``/``asubmit``: record a job and hand it to gearmand as a background job.

The record is inserted first (one database round trip), then gearmand gets the job,
so a worker always finds the record it updates. Inside ``transaction.atomic`` the
gearmand submit waits for the commit (``on_commit``): a worker never starts a job
whose record may still be rolled back. The job handle is recorded by the worker
when the job starts.

With ``run_at=`` or ``delay=`` the job is *scheduled*: recorded with status
``scheduled`` and ``scheduled_for``, and sent with SUBMIT_JOB_EPOCH, so gearmand
holds it until then (see :mod:`.scheduling`).

A submit of a key that has a record follows the key's policy
(:mod:`~django_gearattach.policies`): each step is a conditional UPDATE on the run it
read, and a submit whose step another one beat reads the record again and decides
anew.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from asgiref.sync import sync_to_async
from django.contrib.auth.base_user import AbstractBaseUser
from django.contrib.auth.models import AnonymousUser
from django.db import IntegrityError, connection, transaction

from . import policies, presence, records, runs, signals
from .batching import Batcher
from .clients import get_async_client, get_client, servers_for, wait_until_forgotten
from .conf import conf
from .exceptions import GearattachError, SubmitFailed
from .gearman.errors import ConnectionFailed, GearmanError
from .gearman.protocol import Priority
from .gearman.rendezvous import Address
from .models import Job, Status, ended
from .payload import ATTACH_MARKER, TRACE, check_key, dumps, encode_arguments, new_key
from .policies import KeyPolicy, OnConflict, RunReason
from .runs import Prepared
from .scheduling import schedule
from .sealing import session_hash
from .tasks import Task, function_name, policy_of

#: ``dumps({"args": [], "kwargs": {}})``: the arguments of a job without any, in full.
NO_ARGUMENTS = b'{"args":[],"kwargs":{}}'

logger = logging.getLogger("django_gearattach")


class _Request:
    """Everything a submission needs, validated once for the sync and async paths."""

    def __init__(
        self,
        task: Task[Any, Any] | str,
        args: Sequence[Any],
        kwargs: Mapping[str, Any] | None,
        key: str | None,
        priority: str | None,
        owner: AbstractBaseUser | AnonymousUser | None,
        session_key: str,
        run_at: datetime | None = None,
        delay: float | timedelta | None = None,
        policy: KeyPolicy | None = None,
    ) -> None:
        self.schedule = schedule(run_at, delay)
        self.function = function_name(task)
        # The task's own when not given: a retry or a resubmission keeps its policy.
        self.policy = policy if policy is not None else policy_of(task, key)
        task_priority = task.priority if isinstance(task, Task) else None
        self.priority = Priority(priority or task_priority or conf.DEFAULT_PRIORITY)
        self.data = encode_arguments(args, kwargs)
        if self.data == b"{}":
            self.arguments: dict[str, Any] = {"args": [], "kwargs": {}}
            self._encoded = NO_ARGUMENTS
        else:  # as JSON will store them (tuples become lists, dates strings...)
            self.arguments = {"args": [], "kwargs": {}, **json.loads(self.data)}
            self._encoded = self.data
        self.caller_key = key is not None
        self.key = key if key is not None else new_key()
        self.unique = check_key(self.key)
        # Anonymous users own nothing here; their session binds the job to them, by a
        # keyed hash of its key: the key itself would let a reader of the record in.
        self.owner_id = owner.pk if owner is not None and owner.is_authenticated else None
        self.session_hash = session_hash(session_key)
        self.servers = servers_for(self.function, self.key)
        if conf.TRACING:
            self._carry_trace()
        self._mark_if_replaced()

    def _mark_if_replaced(self) -> None:
        if self.caller_key and self.policy.on_conflict == OnConflict.REPLACE:
            # Latest wins: the worker reads the arguments from the record once it has
            # marked the run running, so a later submit may still replace them.
            self.data = ATTACH_MARKER

    @property
    def status(self) -> Status:
        return Status.SCHEDULED if self.schedule and self.schedule.future else Status.QUEUED

    @property
    def scheduled_for(self) -> datetime | None:
        return self.schedule.run_at if self.schedule else None

    # -- database steps (sync; the async path runs them in a thread) ---------------------
    def existing(self) -> Job | None:
        if not self.caller_key:
            return None
        return records.get(self.function, self.key)

    def _carry_trace(self, rerun_of: Job | None = None) -> None:
        """Add the caller's trace context to the job (only with GEARATTACH["TRACING"],
        which imports OpenTelemetry; an offloaded request signs it into its request)."""
        from .tracing.carrier import carrier_for, offloaded

        if offloaded(self.function):
            return
        self.arguments.pop(TRACE, None)
        run_at = self.schedule.run_at.timestamp() if self.schedule else None
        carrier = carrier_for(self.function, self.key, rerun_of, run_at)
        if carrier is not None:
            self.arguments[TRACE] = carrier
            # dumps(self.arguments) without encoding the arguments again: the encoded
            # ones are what dumps gives for them (they were decoded from it), and the
            # carrier goes last, as in the dict.
            self.data = self._encoded[:-1] + b',"trace":' + dumps(carrier) + b"}"

    def restart(self, job: Job, reason: RunReason) -> bool:
        """Start the finished ``job``'s next run with this request's arguments, owned by
        who asked for it; False when another submit changed the record first."""
        if conf.TRACING:
            self._carry_trace(rerun_of=job)
            self._mark_if_replaced()
        return runs.restart(
            job,
            reason,
            self.status,
            scheduled_for=self.scheduled_for,
            priority=self.priority,
            arguments=self.arguments,
            on_conflict=self.policy.on_conflict,
            owner_id=self.owner_id,
            session_hash=self.session_hash,
        )

    def new_job(self) -> Job:
        return Job(
            function=self.function,
            key=self.key,
            status=self.status,
            scheduled_for=self.scheduled_for,
            priority=self.priority,
            arguments=self.arguments,
            owner_id=self.owner_id,
            session_hash=self.session_hash,
            server=str(self.servers[0]),
            on_conflict=self.policy.on_conflict,
        )

    def insert(self) -> tuple[Job, bool]:
        """Insert the queued record on the key's home server; an existing one wins."""
        job = self.new_job()
        try:
            if connection.in_atomic_block:
                with transaction.atomic():
                    records.insert(job)
            else:
                records.insert(job)
        except IntegrityError:
            # A concurrent submitter of the same key recorded it first and submits it.
            return Job.objects.for_key(self.function, self.key).get(), False
        return job, True

    def sent_to(self, job: Job, server: Address) -> None:
        """Record a failover (the job went to another server than its home)."""
        if str(server) != job.server:
            job.server = str(server)
            Job.objects.filter(pk=job.pk).update(server=job.server)

    def failed(self, job: Job, reason: str) -> SubmitFailed:
        message = f"no gearmand accepted the job ({reason}); is gearmand running?"
        fields = ended(Status.FAILED, message)
        Job.objects.filter(pk=job.pk).update(**fields)
        job.status, job.error, job.finished_at = Status.FAILED, message, fields["finished_at"]
        return SubmitFailed(message)


def _prepare(request: _Request, rerun: bool) -> Prepared:
    return runs.prepare(request, rerun)


def _prepare_many(
    items: list[tuple[_Request, bool]],
) -> list[Prepared | BaseException]:
    """:func:`_prepare` for the submissions of one event-loop turn, in one hop.

    Random keys cannot collide, so their records go in one multi-row INSERT.
    """
    if len(items) > 1 and not any(request.caller_key for request, _ in items):
        jobs = [request.new_job() for request, _ in items]
        try:
            # One statement is atomic by itself: BEGIN and COMMIT would cost PostgreSQL
            # two more round trips.
            with records.atomic_unless_one_statement(jobs):
                records.insert(*jobs)
        except IntegrityError:
            pass  # take the careful path below, one by one
        else:
            return [Prepared(job, True) for job in jobs]
    results: list[Prepared | BaseException] = []
    for request, rerun in items:
        try:
            results.append(_prepare(request, rerun))
        except Exception as exc:
            results.append(exc)
    return results


_prepare_batched: Batcher[tuple[_Request, bool], Prepared] = Batcher(_prepare_many)


def _send(request: _Request, job: Job) -> None:
    client = get_client()
    errors = []
    epoch = request.schedule.epoch if request.schedule else None
    for address in request.servers:
        try:
            if epoch is not None:
                client.submit_epoch(address, request.function, request.unique, epoch, request.data)
            else:
                client.submit_background(
                    address, request.function, request.unique, request.data, request.priority
                )
        except ConnectionFailed as exc:
            errors.append(str(exc))
            continue
        request.sent_to(job, address)
        # Nothing but a worker changes the record from here on, and no worker had the
        # job before gearmand's reply: it is current as of now.
        records.mark_read(job)
        if signals.job_submitted.receivers:
            signals.send(signals.job_submitted, job)
        return
    raise request.failed(job, "; ".join(errors))


def _send_on_commit(request: _Request, job: Job) -> None:
    try:
        _send(request, job)
    except SubmitFailed as exc:
        logger.error("job %s[%s] not submitted after commit: %s", job.function, job.key, exc)


#: How long a run that follows another waits for gearmand to forget that one (seconds).
FORGET_WAIT = 2.0


def send_successor(job: Job, after: Address | None = None) -> None:
    """Send ``job``'s current run, one that followed another run of its key (see
    :mod:`~django_gearattach.runs`), to gearmand once gearmand has forgotten the
    run before it on ``after`` (its server; None: ``job.server``): a submit of the same
    unique would otherwise join the ending job.

    Errors are logged, not raised: the record says queued, so the recovery sweep (or
    an attacher's marker) revives the run.
    """
    arguments = job.arguments or {}
    policy = policies.DEFAULT.overridden(on_conflict=job.on_conflict)
    request = _Request(
        job.function,
        arguments.get("args", []),
        arguments.get("kwargs", {}),
        job.key,
        job.priority,
        None,
        "",
        policy=policy,
    )
    if conf.IMMEDIATE:
        _run_now(job, request.data)
        return
    try:
        server = after or (Address.parse(job.server) if job.server else None)
        if server is not None:
            wait_until_forgotten(server, request.unique, FORGET_WAIT)
        _send(request, job)
    except (GearattachError, GearmanError, ValueError) as exc:
        logger.error(
            "run %s of %s[%s] not sent to gearmand (%s); the recovery sweep will send it",
            job.run_number,
            job.function,
            job.key,
            exc,
        )


def submit(
    task: Task[Any, Any] | str,
    args: Sequence[Any] = (),
    kwargs: Mapping[str, Any] | None = None,
    *,
    key: str | None = None,
    priority: str | None = None,
    rerun: bool = False,
    owner: AbstractBaseUser | AnonymousUser | None = None,
    session_key: str = "",
    run_at: datetime | None = None,
    delay: float | timedelta | None = None,
    on_conflict: str | None = None,
    max_age: float | None = None,
    stale_while_revalidate: float | None = None,
) -> Job:
    """Submit ``task`` as a background job and return its record.

    With ``key=None`` a random 128-bit key is used. With a key whose job is queued or
    running, nothing new is submitted and that job's record is returned (attach to
    it). With a key whose job finished, the stored record is returned, unless
    ``rerun=True`` asks to run it again. Inside ``transaction.atomic`` gearmand gets
    the job when the transaction commits. Raises :class:`SubmitFailed` (and marks
    the record failed) when no configured gearmand accepts it, and
    :class:`~django_gearattach.exceptions.UnknownTask` (submitting nothing) for a
    function name that this process does not define, no worker registers and
    ``GEARATTACH["EXTERNAL_TASKS"]`` does not name: see :mod:`~django_gearattach.presence`.

    ``run_at`` (an aware datetime) or ``delay`` (seconds, or a timedelta) schedules
    the job: its record is ``scheduled`` until a worker starts it, which gearmand
    allows once that time has passed (rounded up to the second). A time already past
    runs the job now. A scheduled job is queued at normal priority when it comes due
    (SUBMIT_JOB_EPOCH has no priority). Raises
    :class:`~django_gearattach.exceptions.InvalidSchedule` for a naive datetime or a
    negative delay. In immediate mode the job runs at once, whatever its time.

    ``on_conflict``, ``max_age`` and ``stale_while_revalidate`` override the task's
    key policy for this submit (see :mod:`~django_gearattach.policies`); with them,
    ``key`` is required. Raises :class:`~django_gearattach.policies.InvalidPolicy`
    for a bad one.
    """
    presence.check_submittable(task)  # a name nobody defines or runs: UnknownTask
    policy = policy_of(task, key, on_conflict, max_age, stale_while_revalidate)
    request = _Request(
        task, args, kwargs, key, priority, owner, session_key, run_at, delay, policy=policy
    )
    prepared = _prepare(request, rerun)
    for successor in prepared.successors:
        _now_or_on_commit(functools.partial(send_successor, successor))
    job, send = prepared.job, prepared.send
    if send:
        if conf.IMMEDIATE:
            return _run_now(job, request.data)
        if connection.in_atomic_block:
            transaction.on_commit(functools.partial(_send_on_commit, request, job))
        else:
            _send(request, job)
    return job


def _now_or_on_commit(step: Any) -> None:
    if connection.in_atomic_block:
        transaction.on_commit(step)
    else:
        step()


def _run_now(job: Job, data: bytes) -> Job:
    """Immediate mode: run the job in this process. Imported here, so that submitting
    never imports the worker loop otherwise."""
    from .worker import immediate

    return immediate.run(job, data)


async def asubmit(
    task: Task[Any, Any] | str,
    args: Sequence[Any] = (),
    kwargs: Mapping[str, Any] | None = None,
    *,
    key: str | None = None,
    priority: str | None = None,
    rerun: bool = False,
    owner: AbstractBaseUser | AnonymousUser | None = None,
    session_key: str = "",
    run_at: datetime | None = None,
    delay: float | timedelta | None = None,
    on_conflict: str | None = None,
    max_age: float | None = None,
    stale_while_revalidate: float | None = None,
) -> Job:
    """The async twin of :func:`submit`, on the event loop's shared connections."""
    await presence.acheck_submittable(task)
    policy = policy_of(task, key, on_conflict, max_age, stale_while_revalidate)
    request = _Request(
        task, args, kwargs, key, priority, owner, session_key, run_at, delay, policy=policy
    )
    prepared = await _prepare_batched((request, rerun))
    for successor in prepared.successors:
        await sync_to_async(send_successor)(successor)
    job, send = prepared.job, prepared.send
    if not send:
        return job
    if conf.IMMEDIATE:
        return await sync_to_async(_run_now)(job, request.data)
    client = get_async_client()
    errors = []
    epoch = request.schedule.epoch if request.schedule else None
    for address in request.servers:
        server = client.connection(address)
        try:
            if epoch is not None:
                await server.submit_epoch(request.function, request.unique, epoch, request.data)
            else:
                await server.submit_background(
                    request.function, request.unique, request.data, request.priority
                )
        except ConnectionFailed as exc:
            errors.append(str(exc))
            continue
        if str(address) != job.server:
            await sync_to_async(request.sent_to)(job, address)
        records.mark_read(job)  # current as of gearmand's reply (see _send)
        if signals.job_submitted.receivers:
            await signals.asend(signals.job_submitted, job)
        return job
    raise await sync_to_async(request.failed)(job, "; ".join(errors))
