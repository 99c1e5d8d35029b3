"""The asyncio runner: a worker process's ``async def`` tasks, many jobs at once.

A worker process whose tasks include coroutine functions starts one
:class:`AsyncRunner` beside its loop (:mod:`.loop`, which keeps the sync tasks): a
thread with an event loop and gearmand connections of its own
(:mod:`~django_gearattach.gearman.aioworker`). It grabs jobs while fewer than
``GEARATTACH["ASYNC_CONCURRENCY"]`` (``gearworker --async-concurrency``) of its jobs
run, and runs each as its own Gearman job with the sync worker's guarantees
(:mod:`.asyncjob`): a running mark that takes the claim, reports through the claim,
the outcome committed before gearmand hears of it, the hand-over to a run that waits
to follow (issue 24), time limits, cancels and leases (:mod:`.asyncwatch`). The
recovery sweep sees its records as any run's (same claim, host and pid).

Every database call runs in a pool of :data:`DB_THREADS` threads, never on the loop.

Jobs are grabbed on "lanes" (:mod:`.asynclanes`), which also keep the rate and
concurrency limits. Running marks and outcomes are written in group commits
(:mod:`.asyncbatch`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import os
import threading
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from django.db import DatabaseError, connections

from .. import records, signals
from ..conf import conf
from ..exceptions import BadPayload, ClaimLost
from ..gearman.errors import GearmanError
from ..gearman.protocol import Command
from ..gearman.rendezvous import Address
from ..gearman.worker import Assignment
from ..models import Status
from ..payload import decode_arguments, dumps, is_attach_marker, shown
from ..tasks import JobContext, Rescheduled, Task
from .answering import Answering, Prepared
from .asyncbatch import Batcher, end_distinct, mark_many
from .asyncjob import AsyncReporter, AsyncRun, cancelled_as
from .asynclanes import Lane, lanes_for
from .asyncwatch import AsyncWatch
from .claim import ENDED, Claim
from .starting import GiveBack, Starter

logger = logging.getLogger("django_gearattach.worker.loop")

#: Threads that make the async runs' database calls (running marks, outcomes, reports).
DB_THREADS = 8


class _Answers(Answering):
    def __init__(self, starter: Starter, stop: threading.Event) -> None:
        self.starter = starter
        self._stop = stop
        #: Outcomes already written in a group commit (asyncbatch.py), by execution.
        self.written: dict[str, bool] = {}

    def _conclude(self, claim: Claim, status: Status, fields: dict[str, Any]) -> bool:
        written = self.written.pop(claim.execution, None)
        if written is None:
            return self._finish(claim, status, fields)
        if written and claim.successor is None and signals.job_finished.receivers:
            signals.send_finished(claim.function, claim.key)
        return written


class AsyncRunner:
    """Runs ``tasks`` (coroutine functions) on an event loop in a thread of its own."""

    def __init__(
        self,
        tasks: Iterable[Task[Any, Any]],
        servers: list[Address],
        host: str,
        stop: threading.Event,
        concurrency: int | None = None,
    ) -> None:
        self.tasks = {t.name: t for t in tasks}
        self.servers = servers
        self.concurrency = concurrency or conf.ASYNC_CONCURRENCY
        self._stop = stop
        self.starter = Starter(host, os.getpid(), stop)
        self.answers = _Answers(self.starter, stop)
        self.jobs_done = 0
        #: Jobs running now, and the most that ran at once (the benchmark reads them).
        self.in_flight = 0
        self.peak = 0
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._executor: ThreadPoolExecutor | None = None

    # -- the thread -----------------------------------------------------------------------
    def start(self) -> AsyncRunner:
        self.starter.pid = os.getpid()
        self._thread = threading.Thread(target=self._main, name="gearattach-async", daemon=True)
        self._thread.start()
        return self

    def join(self, timeout: float | None = None) -> None:
        """Wait for the runner to end (after ``stop`` was set, it finishes its runs)."""
        if self._thread is not None:
            self._thread.join(timeout)

    def _main(self) -> None:
        self._executor = ThreadPoolExecutor(DB_THREADS, thread_name_prefix="gearattach-async-db")
        # Not asyncio.run(): at its end it cancels every task left and waits for them,
        # and the body of a run ended at its hard limit may never end.
        loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(self._run())
            left = [t for t in asyncio.all_tasks(loop) if not t.done()]
            if left:
                logger.warning("async runner: %s task bodies never ended; dropped", len(left))
            loop.run_until_complete(loop.shutdown_asyncgens())
        except Exception:
            logger.exception("the asyncio runner failed")
        finally:
            loop.close()
            # Each database thread closes its own connections (they are per thread): a
            # barrier makes every thread take one of these.
            barrier = threading.Barrier(DB_THREADS)
            for _ in range(DB_THREADS):
                self._executor.submit(_close_connections, barrier)
            self._executor.shutdown(wait=True)
            connections.close_all()

    def in_thread(self, func: Any, /, *args: Any, **kwargs: Any) -> asyncio.Future[Any]:
        """Run a blocking (database) call in one of the runner's threads."""
        assert self._loop is not None
        call = functools.partial(_database_call, func, *args, **kwargs)
        return self._loop.run_in_executor(self._executor, call)

    async def _run(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.watch = AsyncWatch(self.in_thread)
        self.marks = Batcher(self.in_thread, functools.partial(mark_many, self.starter))
        self.ends = Batcher(self.in_thread, end_distinct)
        self._room = asyncio.Semaphore(self.concurrency)
        self._jobs: set[asyncio.Task[None]] = set()
        lanes = lanes_for(self.tasks, self.servers, self.concurrency, self.starter.host)
        self.watch.renew_rights = [lane.throttles for lane in lanes if lane.throttles]
        watching = asyncio.create_task(self.watch.run())
        grabbers = [asyncio.create_task(self._grab_loop(lane)) for lane in lanes]
        logger.info(
            "async runner: up to %s jobs at once of %s",
            self.concurrency,
            ", ".join(sorted(self.tasks)),
        )
        while not self._stop.is_set():
            await asyncio.sleep(0.1)
        for grabber in grabbers:
            grabber.cancel()
        await asyncio.gather(*grabbers, return_exceptions=True)
        # A stopping worker finishes the jobs it runs (as the sync loop finishes its one).
        while self._jobs:
            await asyncio.gather(*list(self._jobs), return_exceptions=True)
        watching.cancel()
        await asyncio.gather(watching, return_exceptions=True)
        await self.watch.close()
        for lane in lanes:
            for conn in lane.conns:  # requeues in gearmand what was grabbed and not run
                await conn.close()
            if lane.throttles is not None:
                await asyncio.gather(self.in_thread(lane.throttles.release_all))

    # -- grabbing -------------------------------------------------------------------------
    async def _grab_loop(self, lane: Lane) -> None:
        while True:
            if lane.throttles is not None:
                wait = await self.in_thread(lane.throttles.acquire, lane.limited)
                if wait > 0:
                    await asyncio.sleep(min(wait, 1.0))
                    continue
            if lane.room is not None:
                await lane.room.acquire()
            await self._room.acquire()
            try:
                job = await lane.grab()
            except BaseException:
                self._released(lane)
                raise
            if job is None:
                self._released(lane)
                continue
            if lane.throttles is not None:
                lane.throttles.spend(job.function)
            task = asyncio.create_task(self._job(job))
            self._jobs.add(task)
            task.add_done_callback(functools.partial(self._ended, lane))

    def _released(self, lane: Lane) -> None:
        self._room.release()
        if lane.room is not None:
            lane.room.release()

    def _ended(self, lane: Lane, task: asyncio.Task[None]) -> None:
        self._jobs.discard(task)
        self._released(lane)

    # -- one job --------------------------------------------------------------------------
    async def _job(self, job: Assignment) -> None:
        key = job.unique.decode("utf-8", "replace")
        began = time.monotonic()
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            outcome = await self._handle(job, key)
        except (GearmanError, DatabaseError, GiveBack) as exc:
            self.starter.forget(job, key, abandoned=True)
            if isinstance(exc, GiveBack):
                # Still held by this connection: closing it requeues the job.
                logger.info(
                    "job %s[%s] handed back unrun: the worker stops", job.function, shown(key)
                )
                return
            # Nothing was recorded for it: gearmand forgets this copy; the record stays
            # active, so attachers follow it on and the recovery sweep resubmits it.
            logger.error("job %s[%s] abandoned: %s", job.function, shown(key), exc)
            job.send(Command.WORK_FAIL)
            return
        except Exception:
            self.starter.forget(job, key, abandoned=True)
            logger.exception("job %s[%s]: the asyncio runner failed", job.function, shown(key))
            job.send(Command.WORK_FAIL)
            return
        finally:
            self.in_flight -= 1
        self.starter.forget(job, key)
        self.jobs_done += 1
        logger.info(
            "job %s[%s] %s in %.3fs (server %s, async)",
            job.function,
            shown(key),
            outcome,
            time.monotonic() - began,
            job.server,
        )

    async def _handle(self, job: Assignment, key: str) -> str:
        marked = False
        if not is_attach_marker(job.data):  # the common case: its mark in a group commit
            with contextlib.suppress(DatabaseError):  # the one-by-one way tells
                marked = await self.marks((job, key))
        prepared = self._prepared(job, key) if marked else None
        if prepared is None:
            prepared = await self.in_thread(self.answers._prepare, job, key, marked)
        if isinstance(prepared, str):
            return str(prepared)
        claim, args, kwargs, _payload = prepared
        # The start signal, once the running mark is committed (as in loop.py).
        claim.send(Command.WORK_DATA, b"")
        reporter = AsyncReporter(claim, conf.PROGRESS_WRITE_INTERVAL, self.in_thread)
        context = JobContext(claim.function, claim.key, reporter, claim)
        task = self.tasks[claim.function]
        if signals.job_started.receivers:
            await self.in_thread(signals.send_started, claim.function, claim.key)
        run = AsyncRun(claim, context, task.time_limits.or_defaults(), time.monotonic())
        self.watch.runs[claim.execution] = run
        try:
            run.body = asyncio.create_task(task.arun(context, args, kwargs))
            await asyncio.wait([run.body, run.stopped], return_when=asyncio.FIRST_COMPLETED)
        finally:
            self.watch.runs.pop(claim.execution, None)
        body = run.body
        if run.stopped.done():
            body.add_done_callback(_forget_body)  # it may never end: nobody waits for it
            await self.in_thread(reporter.close)  # its stream's writer thread ends
            if claim.state == ENDED:
                return f"ended by the watchdog first ({claim.ended_by})"
            # Unrecorded (the database failed): its lease runs out, then the recovery
            # sweep resubmits it.
            return "stopped by the watchdog; its end was not recorded"
        await reporter.settled()
        answers = self.answers
        try:
            raw = dumps(body.result())
        except asyncio.CancelledError as cancelled:
            return await self.in_thread(  # type: ignore[no-any-return]
                answers._failed, claim, context, reporter, cancelled_as(run, cancelled)
            )
        except Rescheduled as again:
            return await self.in_thread(answers._rescheduled, claim, again)  # type: ignore[no-any-return]
        except ClaimLost:
            return await self.in_thread(answers._answer_when_done, claim.job, key)  # type: ignore[no-any-return]
        except Exception as exc:
            return await self.in_thread(answers._failed, claim, context, reporter, exc)  # type: ignore[no-any-return]
        fields = {"result": json.loads(raw)} | reporter.pending()
        written = await self.ends((claim, Status.COMPLETE, fields))
        plain = claim.successor is None and not context.outcome_callbacks
        if written and plain and not signals.job_finished.receivers:
            claim.send_final(Command.WORK_COMPLETE, raw)  # nothing more to write or call
            return "complete"
        answers.written[claim.execution] = written
        return await self.in_thread(answers._completed, claim, context, reporter, raw)  # type: ignore[no-any-return]

    def _prepared(self, job: Assignment, key: str) -> Prepared | None:
        """The common case of :meth:`~.answering.Answering._prepare`, on the loop: a job
        marked running in a group commit, with well-formed arguments (None otherwise:
        the whole way, in a thread)."""
        claim = self.starter.claims.get((job.function, key))
        if claim is None:
            return None
        try:
            args, kwargs = decode_arguments(job.data)
        except BadPayload:
            return None
        return claim, args, kwargs, job.data


def _database_call(func: Any, /, *args: Any, **kwargs: Any) -> Any:
    records.drop_broken_connections()  # whatever failed last in this thread, reconnect
    return func(*args, **kwargs)


def _close_connections(barrier: threading.Barrier) -> None:
    with contextlib.suppress(threading.BrokenBarrierError):
        barrier.wait(5.0)
    connections.close_all()


def _forget_body(body: asyncio.Task[Any]) -> None:
    if not body.cancelled():
        body.exception()  # retrieved: asyncio logs no "exception was never retrieved"
