"""Deleting old job records (``manage.py gearattach prune``, the admin), and their files.

An offloaded request can leave files in default storage: uploads its view never
read (a job cancelled before it ran) and the body of a download it returned. They
go with the record.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import timedelta

from django.core.files.storage import default_storage
from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from .models import FINISHED, Job, JobQuerySet
from .web.capture import stored_files
from .web.messages import OFFLOAD_FUNCTION

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_AGE = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$")


def parse_age(text: str) -> timedelta:
    """``"30d"``, ``"12h"``, ``"90m"``, ``"45s"`` or ``"2w"`` as a timedelta."""
    match = _AGE.match(text.lower())
    if match is None:
        raise ValueError(
            f"{text!r} is not an age: write a number and a unit, s, m, h, d or w (e.g. 30d)"
        )
    return timedelta(seconds=int(match[1]) * _UNITS[match[2]])


def prunable(older_than: timedelta, statuses: Iterable[str] = FINISHED) -> JobQuerySet:
    """Finished records created more than ``older_than`` ago, with one of ``statuses``.

    Queued and running records are never pruned: a worker would record them again.
    The filter (status, created_at) is served by the status/created index.
    """
    chosen = [s for s in statuses if s in FINISHED]
    if not chosen:
        raise ValueError(f"only finished records can be pruned: {', '.join(FINISHED)}")
    cutoff = timezone.now() - older_than
    return Job.objects.filter(status__in=chosen, created_at__lt=cutoff)


def prune(
    older_than: timedelta, statuses: Iterable[str] = FINISHED, batch_size: int = 1000
) -> int:
    """Delete the :func:`prunable` records in batches of ``batch_size``; return how many.

    Each batch is its own short transaction, so a large prune never holds long locks
    and can be interrupted and resumed.
    """
    queryset = prunable(older_than, statuses).order_by()
    deleted = 0
    while True:
        with transaction.atomic():
            ids = list(queryset.values_list("pk", flat=True)[:batch_size])
            if not ids:
                return deleted
            deleted += delete_records(Job.objects.filter(pk__in=ids))


def delete_records(queryset: QuerySet[Job]) -> int:
    """Delete these records, and once that is committed the files they left in storage."""
    files = [
        path
        for key, arguments, result in queryset.filter(function=OFFLOAD_FUNCTION)
        .order_by()
        .values_list("key", "arguments", "result")
        for path in stored_files(key, arguments, result)
    ]
    # The count of records alone: their stream chunks (and anything else that cascades)
    # are deleted with them.
    _, counts = queryset.delete()
    count = counts.get(Job._meta.label, 0)
    if files:
        transaction.on_commit(lambda: delete_files(files))
    return count


def delete_files(paths: Iterable[str]) -> None:
    for path in paths:
        default_storage.delete(path)
