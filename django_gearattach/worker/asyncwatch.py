"""The watch of the asyncio runner: time limits, cancel requests and leases of its runs.

What the sync worker's watchdog thread and lease keeper do for its one job
(:mod:`.watchdog`, :mod:`.fencing`), done on the event loop for every async run at
once, with the database work in the runner's threads:

* the soft time limit cancels the run's body (``asyncio.CancelledError`` where it
  awaits, as ``asyncio.timeout`` does); a body that lets it propagate fails with
  :class:`~django_gearattach.timelimits.SoftTimeLimitExceeded`, one that catches it
  may clean up and return;
* the hard limit ends the run: the record is marked failed through the claim, gearmand
  hears WORK_FAIL, and the body is cancelled and no longer waited for. The process
  and its other runs go on. Nothing on the loop can stop a coroutine that blocks the
  loop (``time.sleep``, a blocking call): while it does, no limit is looked at;
* a cancel request, looked for in one SELECT for all runs every
  ``CANCEL_CHECK_INTERVAL``, tells the context and cancels the body; a body that has
  not ended ``CANCEL_GRACE`` seconds later is ended like a hard limit (cancelled);
* the claims' leases are renewed in one UPDATE every third of ``LEASE``; a run whose
  renewal matches no row lost its claim (:class:`~.claim.Claim`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable
from typing import Any

from django.db import DatabaseError

from .. import cancelling, records, signals
from ..conf import conf
from ..gearman.protocol import Command
from ..models import Job, Status
from ..timelimits import async_hard_message, soft_message
from . import fencing
from .asyncjob import AsyncRun, InThread
from .claim import Claim

logger = logging.getLogger("django_gearattach.worker.loop")

#: Seconds between two looks at the runs' limits.
TICK = 0.05
#: Executions per statement (SQLite's variable limit is 999 on old builds).
CHUNK = 500


class AsyncWatch:
    """Watches the runs of one asyncio runner (``runs``, by execution id)."""

    def __init__(self, in_thread: InThread) -> None:
        self.runs: dict[str, AsyncRun] = {}
        self._in_thread = in_thread
        self._busy: set[str] = set()  # database looks in flight, by name
        self._tasks: set[asyncio.Task[Any]] = set()
        #: Called (in a thread) about once a second: the lanes' throttles renew.
        self.renew_rights: list[Any] = []

    async def run(self) -> None:
        now = time.monotonic()
        next_cancel = now + conf.CANCEL_CHECK_INTERVAL
        next_lease = now + conf.LEASE / 3
        next_rights = now + 1.0
        while True:
            await asyncio.sleep(TICK)
            now = time.monotonic()
            for run in list(self.runs.values()):
                self._limits(run, now)
            if now >= next_cancel:
                next_cancel = now + conf.CANCEL_CHECK_INTERVAL
                self._spawn("cancels", self._look_for_cancels())
            if now >= next_lease:
                next_lease = now + conf.LEASE / 3
                self._spawn("leases", self._renew_leases())
            if now >= next_rights and self.renew_rights:
                next_rights = now + 1.0
                self._spawn("rights", self._renew_rights())

    def _spawn(self, name: str, coroutine: Any) -> None:
        if name in self._busy or not (self.runs or name == "rights"):
            coroutine.close()
            return
        self._busy.add(name)
        task = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(lambda _: self._busy.discard(name))

    # -- limits ---------------------------------------------------------------------------
    def _limits(self, run: AsyncRun, now: float) -> None:
        if run.body is None or run.ending:
            return
        body_running = not run.body.done()
        soft_at = run.soft_at
        if body_running and soft_at is not None and not run.soft_done and now >= soft_at:
            run.soft_done = True
            assert run.limits.soft is not None
            logger.warning("job %s: %s", run.claim.name, soft_message(run.limits.soft))
            run.cancel_body("soft")
        hard_at = run.hard_at
        if body_running and hard_at is not None and now >= hard_at:
            assert run.limits.hard is not None
            self._end(run, Status.FAILED, async_hard_message(run.limits.hard))
        elif body_running and run.cancel_at is not None and now >= run.cancel_at:
            error = (
                f"{cancelling.CANCELLED_RUNNING_ERROR}; stopped after "
                f"{conf.CANCEL_GRACE:g}s of grace"
            )
            self._end(run, Status.CANCELLED, error)

    def _end(self, run: AsyncRun, status: Status, error: str) -> None:
        run.ending = True  # no more looks at it
        task = asyncio.create_task(self._record_end(run, status, error))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _record_end(self, run: AsyncRun, status: Status, error: str) -> None:
        """Record the run's end, tell gearmand, then stop waiting for (and cancel) its body."""
        claim = run.claim
        logger.error("job %s %s: %s", claim.name, status.value, error)
        try:
            written = await self._in_thread(claim.end, status, {"error": error}, by="watchdog")
        except DatabaseError:
            logger.exception("job %s: the outcome was not recorded", claim.name)
            written = False
        finally:
            run.stop("watchdog")
        if written:
            with contextlib.suppress(Exception):
                claim.send_final(Command.WORK_FAIL)
            await self._in_thread(_send_finished, claim)

    # -- database looks -------------------------------------------------------------------
    async def _look_for_cancels(self) -> None:
        executions = [e for e, run in self.runs.items() if run.cancel_at is None]
        try:
            asked = await self._in_thread(cancel_requested, executions)
        except DatabaseError as exc:
            logger.warning("async runs: cannot look for cancel requests: %s", exc)
            return
        now = time.monotonic()
        for execution in asked:
            run = self.runs.get(execution)
            if run is None or run.cancel_at is not None:
                continue
            logger.info("job %s: cancel requested", run.claim.name)
            run.context.cancel_requested = True
            run.cancel_at = now + conf.CANCEL_GRACE
            run.cancel_body("cancel")

    async def _renew_leases(self) -> None:
        claims = [run.claim for run in self.runs.values() if run.claim.held]
        try:
            await self._in_thread(renew_leases, claims)
        except DatabaseError as exc:
            logger.warning("async runs: leases not renewed: %s", exc)

    async def _renew_rights(self) -> None:
        for throttles in self.renew_rights:
            await self._in_thread(throttles.renew)

    async def close(self) -> None:
        for task in list(self._tasks):
            with contextlib.suppress(BaseException):
                await task


def _chunks(items: list[Any]) -> Iterable[list[Any]]:
    for start in range(0, len(items), CHUNK):
        yield items[start : start + CHUNK]


def cancel_requested(executions: list[str]) -> set[str]:
    """Which of these runs someone asked to cancel (one indexed SELECT per chunk)."""
    records.drop_broken_connections()
    asked: set[str] = set()
    for chunk in _chunks(executions):
        asked.update(
            Job.objects.filter(
                status=Status.RUNNING, execution__in=chunk, cancel_requested_at__isnull=False
            ).values_list("execution", flat=True)
        )
    return asked


def renew_leases(claims: list[Claim]) -> None:
    """Extend the leases of these held claims in one UPDATE per chunk; a chunk that
    matched fewer rows is renewed claim by claim, which settles the lost ones."""
    records.drop_broken_connections()
    for chunk in _chunks(claims):
        count = Job.objects.filter(
            status=Status.RUNNING, execution__in=[c.execution for c in chunk]
        ).update(lease_until=fencing.lease_end())
        if count < len(chunk):
            for claim in chunk:
                claim.renew()  # refused (no query) once the run ended


def _send_finished(claim: Claim) -> None:
    try:
        signals.send_finished(claim.function, claim.key)
    except Exception:
        logger.exception("job %s: a job_finished receiver failed", claim.name)
