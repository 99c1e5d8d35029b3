"""``submit``/``asubmit``: record a job and hand it to gearmand as a background job.

gearmand gets the job first and the record is inserted after, so a submission costs
one database round trip. A worker that starts the job before the insert lands
records it itself (it upserts by function and key); the insert then only adds what
the worker could not know (owner, session, priority).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from asgiref.sync import sync_to_async
from django.contrib.auth.base_user import AbstractBaseUser
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from .clients import get_async_client, get_client, servers_for
from .conf import conf
from .exceptions import SubmitFailed
from .gearman.errors import ConnectionFailed
from .gearman.protocol import Priority
from .gearman.routing import Address
from .models import Job, Status
from .payload import check_key, encode_arguments, new_key, to_json_value
from .tasks import Task, function_name


class _Request:
    """Everything a submission needs, validated once for the sync and async paths."""

    def __init__(
        self,
        task: Task[Any, Any] | str,
        args: Sequence[Any],
        kwargs: Mapping[str, Any] | None,
        key: str | None,
        priority: str | None,
        owner: AbstractBaseUser | None,
        session_key: str,
    ) -> None:
        self.function = function_name(task)
        task_priority = task.priority if isinstance(task, Task) else None
        self.priority = Priority(priority or task_priority or conf.DEFAULT_PRIORITY)
        self.data = encode_arguments(args, kwargs)
        self.arguments = to_json_value({"args": list(args), "kwargs": dict(kwargs or {})})
        self.caller_key = key is not None
        self.key = key if key is not None else new_key()
        self.unique = check_key(self.key)
        self.owner = owner if owner is not None and owner.is_authenticated else None
        self.session_key = session_key or ""
        self.servers = servers_for(self.function, self.key)

    # -- database steps (sync; the async path runs them in a thread) ---------------------
    def existing(self) -> Job | None:
        if not self.caller_key:
            return None
        return Job.objects.for_key(self.function, self.key).first()

    def reset(self, job: Job) -> None:
        """Make a finished record run again (``rerun=True``)."""
        Job.objects.filter(pk=job.pk).update(
            status=Status.QUEUED,
            priority=self.priority,
            arguments=self.arguments,
            progress_numerator=0,
            progress_denominator=0,
            data=None,
            result=None,
            error="",
            traceback="",
            attempts=0,
            started_at=None,
            finished_at=None,
            created_at=timezone.now(),
        )

    def record(self, server: Address, handle: bytes, existing: Job | None) -> Job:
        fields: dict[str, Any] = {
            "server": str(server),
            "handle": handle.decode(errors="replace"),
        }
        if existing is not None:
            Job.objects.filter(pk=existing.pk).update(**fields)
            return Job.objects.get(pk=existing.pk)
        job = Job(
            function=self.function,
            key=self.key,
            status=Status.QUEUED,
            priority=self.priority,
            arguments=self.arguments,
            owner=self.owner,
            session_key=self.session_key,
            **fields,
        )
        try:
            if connection.in_atomic_block:
                with transaction.atomic():
                    job.save(force_insert=True)
            else:
                job.save(force_insert=True)
        except IntegrityError:
            # A worker (or a concurrent submitter of the same key) recorded it first.
            rows = Job.objects.for_key(self.function, self.key)
            rows.filter(owner__isnull=True, session_key="").update(
                owner=self.owner, session_key=self.session_key
            )
            rows.update(priority=self.priority)
            return rows.get()
        return job

    def failed(self, reason: str, existing: Job | None) -> SubmitFailed:
        message = f"no gearmand accepted the job ({reason}); is gearmand running?"
        if existing is not None:
            Job.objects.filter(pk=existing.pk).update(
                status=Status.FAILED, error=message, finished_at=timezone.now()
            )
        else:
            Job.objects.get_or_create(
                function=self.function,
                key=self.key,
                defaults={
                    "status": Status.FAILED,
                    "priority": self.priority,
                    "arguments": self.arguments,
                    "owner": self.owner,
                    "session_key": self.session_key,
                    "error": message,
                    "finished_at": timezone.now(),
                },
            )
        return SubmitFailed(message)


def _decide(request: _Request, existing: Job | None, rerun: bool) -> Job | None:
    """The existing record to return instead of submitting, if any."""
    if existing is None:
        return None
    if existing.is_active or not rerun:
        return existing
    request.reset(existing)
    return None


def submit(
    task: Task[Any, Any] | str,
    args: Sequence[Any] = (),
    kwargs: Mapping[str, Any] | None = None,
    *,
    key: str | None = None,
    priority: str | None = None,
    rerun: bool = False,
    owner: AbstractBaseUser | None = None,
    session_key: str = "",
) -> Job:
    """Submit ``task`` as a background job and return its record.

    With ``key=None`` a random 128-bit key is used. With a key whose job is queued or
    running, nothing new is submitted and that job's record is returned (attach to
    it). With a key whose job finished, the stored record is returned, unless
    ``rerun=True`` asks to run it again.
    """
    request = _Request(task, args, kwargs, key, priority, owner, session_key)
    existing = request.existing()
    if (answer := _decide(request, existing, rerun)) is not None:
        return answer
    client = get_client()
    errors = []
    for address in request.servers:
        try:
            handle = client.submit_background(
                address, request.function, request.unique, request.data, request.priority
            )
        except ConnectionFailed as exc:
            errors.append(str(exc))
            continue
        return request.record(address, handle, existing)
    raise request.failed("; ".join(errors), existing)


async def asubmit(
    task: Task[Any, Any] | str,
    args: Sequence[Any] = (),
    kwargs: Mapping[str, Any] | None = None,
    *,
    key: str | None = None,
    priority: str | None = None,
    rerun: bool = False,
    owner: AbstractBaseUser | None = None,
    session_key: str = "",
) -> Job:
    """The async twin of :func:`submit`."""
    request = _Request(task, args, kwargs, key, priority, owner, session_key)
    existing = await sync_to_async(request.existing)() if request.caller_key else None
    if existing is not None:
        answer = await sync_to_async(_decide)(request, existing, rerun)
        if answer is not None:
            return answer
    client = get_async_client()
    errors = []
    for address in request.servers:
        try:
            handle = await client.connection(address).submit_background(
                request.function, request.unique, request.data, request.priority
            )
        except ConnectionFailed as exc:
            errors.append(str(exc))
            continue
        return await sync_to_async(request.record)(address, handle, existing)
    raise await sync_to_async(request.failed)("; ".join(errors), existing)
