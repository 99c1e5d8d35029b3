"""Group commits of the asyncio runner: many runs' running marks, or outcomes, at once.

Hundreds of async runs start and end within moments of each other. Each writes its
record twice (the running mark that takes its claim, then its outcome), and one
transaction per write would make the database, not the tasks, the limit (SQLite
has one writer at a time). So the runs' writes wait in a :class:`Batcher` while one
write is in flight, and the next goes as one transaction for all that waited
(:func:`~django_gearattach.records.update_together`). Each write keeps its own
condition (a running mark only on an unclaimed active record, an outcome only
under the run's claim), so a batch changes what is written together, not what is
written. A write that did not match (a record that another run holds, a run with a
successor waiting) goes the one-by-one way (:mod:`.starting`, :mod:`.answering`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from .. import records
from ..gearman.worker import Assignment
from ..models import Status
from .asyncjob import InThread
from .claim import Claim, end_many
from .starting import Starter

_I = TypeVar("_I")
_R = TypeVar("_R")

#: Writes per transaction at most.
MOST = 250


class Batcher(Generic[_I, _R]):
    """Runs ``write_many(items)`` in a thread for the items that waited meanwhile."""

    def __init__(self, in_thread: InThread, write_many: Callable[[list[_I]], list[_R]]) -> None:
        self._in_thread = in_thread
        self._write_many = write_many
        self._waiting: list[tuple[_I, asyncio.Future[_R]]] = []
        self._writing = False

    async def __call__(self, item: _I) -> _R:
        future: asyncio.Future[_R] = asyncio.get_running_loop().create_future()
        self._waiting.append((item, future))
        if not self._writing:
            self._writing = True
            asyncio.create_task(self._write())  # noqa: RUF006 (it ends with the batch)
        return await future

    async def _write(self) -> None:
        try:
            while self._waiting:
                batch, self._waiting = self._waiting[:MOST], self._waiting[MOST:]
                try:
                    results = await self._in_thread(self._write_many, [i for i, _ in batch])
                except Exception as exc:
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                for (_, future), result in zip(batch, results, strict=True):
                    if not future.done():
                        future.set_result(result)
        finally:
            self._writing = False


def mark_many(starter: Starter, jobs: list[tuple[Assignment, str]]) -> list[bool]:
    """Running marks of ``jobs`` (distinct records) in one transaction; True for each
    one that took its claim (``starter.claims`` holds it). Any other goes the one-by-one
    way (:meth:`~.starting.Starter.start`)."""
    seen: set[tuple[str, str]] = set()
    marks: list[int] = []
    specs = []
    for index, (job, key) in enumerate(jobs):
        if (job.function, key) in seen or (job.function, key) in starter.claims:
            continue  # two copies of one job: the second waits for the first's claim
        seen.add((job.function, key))
        specs.append(starter.running_mark(job, key, starter.running_fields(job, key)))
        marks.append(index)
    taken = [False] * len(jobs)
    try:
        counts = records.update_together(*specs) if specs else []
    except Exception:
        for index in marks:
            starter.forget(*jobs[index])
        raise
    for index, count in zip(marks, counts, strict=True):
        taken[index] = count == 1
        if count != 1:
            starter.forget(*jobs[index])
    return taken


def end_distinct(ends: list[tuple[Claim, Status, dict[str, Any]]]) -> list[bool]:
    """:func:`~.claim.end_many` for runs of distinct records; a second run of one record
    in the batch ends by itself after them."""
    seen: set[tuple[str, str]] = set()
    first: list[int] = []
    rest: list[int] = []
    for index, (claim, _, _) in enumerate(ends):
        (rest if (claim.function, claim.key) in seen else first).append(index)
        seen.add((claim.function, claim.key))
    written = [False] * len(ends)
    for index, done in zip(first, end_many([ends[i] for i in first]), strict=True):
        written[index] = done
    for index in rest:
        claim, status, fields = ends[index]
        written[index] = claim.end(status, fields)
    return written
