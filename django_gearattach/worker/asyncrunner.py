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

Rate and concurrency limits (:mod:`~django_gearattach.ratelimits`): each limited
function is grabbed on connections of its own ("lanes"), only while a right is held:
a rate right per job; with ``concurrency=N``, up to N lanes (no more than the
runner's own limit), each holding one slot and running one job at a time. So no
CANT_DO is ever sent for a function with a job running here.
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
from dataclasses import dataclass, field
from typing import Any

from django.db import DatabaseError, connections

from .. import records, signals
from ..conf import conf
from ..exceptions import ClaimLost
from ..gearman.aioworker import AsyncWorkerConnection
from ..gearman.errors import GearmanError
from ..gearman.protocol import Command
from ..gearman.rendezvous import Address
from ..gearman.worker import Assignment
from ..models import Status
from ..payload import dumps, is_attach_marker, shown
from ..ratelimits import Throttles
from ..tasks import JobContext, Rescheduled, Task
from .answering import Answering
from .asyncbatch import Batcher, end_distinct, mark_many
from .asyncjob import AsyncReporter, AsyncRun, cancelled_as
from .asyncwatch import AsyncWatch
from .claim import ENDED, Claim
from .starting import GiveBack, Starter

logger = logging.getLogger("django_gearattach.worker.loop")

#: Threads that make the async runs' database calls (running marks, outcomes, reports).
DB_THREADS = 8
BACKOFF_START = 0.1
BACKOFF_MAX = 5.0
#: Connections (per server) that grab the jobs of the tasks without limits.
GRABBERS = 4
#: Seconds a grab waits for a NOOP before it asks again.
IDLE_WAIT = 0.5


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


@dataclass(eq=False)
class _Lane:
    """Connections (one per server) that grab jobs of ``functions``."""

    functions: list[str]
    servers: list[Address]
    throttles: Throttles | None = None
    #: Jobs this lane may run at once (None: only the runner's limit).
    room: asyncio.Semaphore | None = None
    conns: list[AsyncWorkerConnection] = field(default_factory=list)
    retry_at: list[float] = field(default_factory=list)
    failures: list[int] = field(default_factory=list)
    next: int = 0

    def __post_init__(self) -> None:
        self.conns = [AsyncWorkerConnection(a, self.functions, conf.TIMEOUT) for a in self.servers]
        self.retry_at = [0.0] * len(self.servers)
        self.failures = [0] * len(self.servers)

    @property
    def limited(self) -> str:
        return self.functions[0]


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
            self._executor.submit(connections.close_all)
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
        lanes = self._lanes()
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

    def _lanes(self) -> list[_Lane]:
        free = [name for name, t in self.tasks.items() if not (t.rate_limit or t.concurrency)]
        # Several connections grab at once: one grab is a round trip to gearmand.
        grabbers = min(GRABBERS, self.concurrency) if free else 0
        lanes = [_Lane(free, self.servers) for _ in range(grabbers)]
        host = self.starter.host
        for name, task in sorted(self.tasks.items()):
            if name in free:
                continue
            count = min(task.concurrency, self.concurrency) if task.concurrency else 1
            for index in range(count):
                throttles = Throttles.for_tasks([task])
                assert throttles is not None
                # One holder per lane: each lane holds a concurrency slot of its own.
                throttles.holder = f"{host[:200]}:{os.getpid()}/async{index}"
                room = asyncio.Semaphore(1) if task.concurrency else None
                lanes.append(_Lane([name], self.servers, throttles, room))
        return lanes

    # -- grabbing -------------------------------------------------------------------------
    async def _grab_loop(self, lane: _Lane) -> None:
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
                job = await self._grab(lane)
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

    def _released(self, lane: _Lane) -> None:
        self._room.release()
        if lane.room is not None:
            lane.room.release()

    def _ended(self, lane: _Lane, task: asyncio.Task[None]) -> None:
        self._jobs.discard(task)
        self._released(lane)

    async def _grab(self, lane: _Lane) -> Assignment | None:
        count = len(lane.conns)
        for offset in range(count):
            index = (lane.next + offset) % count
            if not await self._ensure(lane, index):
                continue
            try:
                job = await lane.conns[index].grab()
            except GearmanError as exc:
                self._failed(lane, index, exc)
                continue
            if job is not None:
                lane.next = (index + 1) % count
                return job
        live = [conn for conn in lane.conns if conn.connected]
        if not live:
            await asyncio.sleep(BACKOFF_START)
            return None
        sleeps = [asyncio.create_task(conn.sleep(IDLE_WAIT)) for conn in live]
        try:
            await asyncio.wait(sleeps, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for sleeping in sleeps:
                sleeping.cancel()
        return None

    async def _ensure(self, lane: _Lane, index: int) -> bool:
        conn = lane.conns[index]
        if conn.connected:
            return True
        if time.monotonic() < lane.retry_at[index]:
            return False
        # A new connection object: packets of jobs grabbed on the old one (gearmand
        # requeued them when it dropped) must not reach the new one.
        conn = AsyncWorkerConnection(conn.address, lane.functions, conn.timeout)
        lane.conns[index] = conn
        try:
            await conn.connect()
        except GearmanError as exc:
            self._failed(lane, index, exc)
            return False
        lane.failures[index] = 0
        return True

    def _failed(self, lane: _Lane, index: int, exc: GearmanError) -> None:
        lane.failures[index] += 1
        delay = min(BACKOFF_START * 2 ** (lane.failures[index] - 1), BACKOFF_MAX)
        lane.retry_at[index] = time.monotonic() + delay
        logger.warning("async runner: %s (again in %.1fs)", exc, delay)

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
                logger.info("job %s[%s] handed back unrun: the worker stops", job.function, key)
                return
            # Nothing was recorded for it: gearmand forgets this copy; the record stays
            # active, so attachers follow it on and the recovery sweep resubmits it.
            logger.error("job %s[%s] abandoned: %s", job.function, shown(key), exc)
            job.send(Command.WORK_FAIL)
            return
        except Exception:
            self.starter.forget(job, key, abandoned=True)
            logger.exception("job %s[%s]: the asyncio runner failed", job.function, key)
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
        answers.written[claim.execution] = await self.ends((claim, Status.COMPLETE, fields))
        return await self.in_thread(answers._completed, claim, context, reporter, raw)  # type: ignore[no-any-return]


def _database_call(func: Any, /, *args: Any, **kwargs: Any) -> Any:
    records.drop_broken_connections()  # whatever failed last in this thread, reconnect
    return func(*args, **kwargs)


def _forget_body(body: asyncio.Task[Any]) -> None:
    if not body.cancelled():
        body.exception()  # retrieved: asyncio logs no "exception was never retrieved"
