"""The watchdog of a worker process: time limits and cancel requests of the running job.

One daemon thread per worker process watches the job the worker is running (between
:meth:`Watchdog.watching`'s enter and exit), and does nothing while it is idle:

* a cancel request (:mod:`~django_gearattach.cancelling`): looked for every
  ``CANCEL_CHECK_INTERVAL`` seconds of a running job (one indexed SELECT; a job
  shorter than that costs nothing); when found, the task's context is told, and
  ``CANCEL_GRACE`` seconds later the job is ended;
* the soft time limit: :class:`~django_gearattach.timelimits.SoftTimeLimitExceeded`
  is raised in the thread running the task (:mod:`~django_gearattach.timelimits`);
* the hard time limit, or the end of a cancel's grace: the job is ended.

Ending a job: the record is marked (failed or cancelled, only while it still says
running), WORK_FAIL goes to gearmand on the job's own connection (gearmand forgets
the job: no requeue, and attachers hear at once), and the process ends through
``end_process`` (the supervisor starts a new one). Everything runs in this thread,
which needs the GIL: a task stuck in C code that holds the GIL (rare: sleeps, socket
reads and most C libraries release it) is not stopped until it lets go.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from django.db import DatabaseError, close_old_connections, connections

from .. import cancelling, signals
from ..conf import conf
from ..gearman.protocol import Command
from ..gearman.worker import Assignment
from ..models import Job, Status
from ..tasks import JobContext
from ..timelimits import SoftTimeLimitExceeded, TimeLimits, hard_message, soft_message

logger = logging.getLogger("django_gearattach.worker.loop")

#: The signal that interrupts the task's thread at its soft limit (as in Celery).
SOFT_SIGNAL = signal.SIGUSR1
#: Seconds between two looks of the watchdog thread at the running job.
TICK = 0.05


@dataclass
class _Watched:
    job: Assignment
    key: str
    context: JobContext
    thread: int
    soft_at: float | None
    soft: float | None
    hard_at: float | None
    hard: float | None
    next_check: float
    cancel_at: float | None = None
    soft_sent: bool = False
    pending: list[BaseException] = field(default_factory=list)
    #: The run's claim on the record (fencing.py): only this run's record is ended.
    execution: str = ""


class Watchdog:
    """Enforces time limits and cancel requests on the job its worker runs."""

    def __init__(self, end_process: Callable[[], None] | None = None) -> None:
        #: How the process ends when a job must stop (None: it cannot, e.g. in tests that
        #: run a worker in a thread; the job is then only recorded and reported).
        self.end_process = end_process
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._current: _Watched | None = None
        self._thread: threading.Thread | None = None
        self._main = threading.main_thread().ident
        self._handler_installed = False
        #: Called on every look while a job runs (a throttle renews its leases).
        self.on_tick: Callable[[], None] | None = None
        #: Told what happens to the running job: ``on_event(name, attributes)`` with
        #: "cancel_requested", "soft_time_limit", and "ended" before the process ends
        #: (the run's span: tracing/run.py).
        self.on_event: Callable[[str, dict[str, Any]], None] | None = None

    @contextlib.contextmanager
    def watching(
        self,
        job: Assignment,
        key: str,
        limits: TimeLimits,
        context: JobContext,
        execution: str = "",
    ) -> Iterator[None]:
        """Watch the task run inside this block."""
        limits = limits.or_defaults()
        now = time.monotonic()
        thread = threading.get_ident()
        if limits.soft is not None and thread == self._main and not self._handler_installed:
            signal.signal(SOFT_SIGNAL, self._on_soft_signal)
            self._handler_installed = True
        watched = _Watched(
            job,
            key,
            context,
            thread,
            now + limits.soft if limits.soft is not None else None,
            limits.soft,
            now + limits.hard if limits.hard is not None else None,
            limits.hard,
            now + conf.CANCEL_CHECK_INTERVAL,
            execution=execution,
        )
        with self._lock:
            self._current = watched
            self._ensure_thread()
            self._wake.notify()
        try:
            yield
        finally:
            with self._lock:
                self._current = None

    # -- the thread ---------------------------------------------------------------------
    def _ensure_thread(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._loop, name="gearattach-watchdog")
            self._thread.daemon = True
            self._thread.start()

    def _loop(self) -> None:
        while True:
            with self._lock:
                while self._current is None:
                    # Idle: hold no database connection (a worker may wait for hours).
                    connections.close_all()
                    self._wake.wait()
                watched = self._current
            try:
                self._look(watched)
            except Exception:  # the watchdog must outlive any one job's trouble
                logger.exception("watchdog: job %s[%s]", watched.job.function, watched.key)
            time.sleep(TICK)

    def _look(self, watched: _Watched) -> None:
        if self.on_tick is not None:
            self.on_tick()
        now = time.monotonic()
        if watched.cancel_at is None and now >= watched.next_check:
            watched.next_check = now + conf.CANCEL_CHECK_INTERVAL
            if self._cancel_requested(watched):
                logger.info("job %s[%s]: cancel requested", watched.job.function, watched.key)
                watched.context.cancel_requested = True
                watched.cancel_at = now + conf.CANCEL_GRACE
                self._tell("cancel_requested", grace=conf.CANCEL_GRACE)
        if watched.soft_at is not None and not watched.soft_sent and now >= watched.soft_at:
            watched.soft_sent = True
            assert watched.soft is not None
            self._tell("soft_time_limit", seconds=watched.soft)
            self._raise_soft(watched, SoftTimeLimitExceeded(soft_message(watched.soft)))
        if watched.hard_at is not None and now >= watched.hard_at:
            assert watched.hard is not None
            self._end(watched, Status.FAILED, hard_message(watched.hard))
        elif watched.cancel_at is not None and now >= watched.cancel_at:
            self._end(
                watched,
                Status.CANCELLED,
                f"{cancelling.CANCELLED_RUNNING_ERROR}; stopped after "
                f"{conf.CANCEL_GRACE:g}s of grace",
            )

    def _tell(self, name: str, **attributes: Any) -> None:
        if self.on_event is not None:
            try:
                self.on_event(name, attributes)
            except Exception:
                logger.exception("watchdog: telling %s failed", name)

    def _cancel_requested(self, watched: _Watched) -> bool:
        try:
            return cancelling.is_requested(watched.job.function, watched.key)
        except DatabaseError as exc:
            logger.warning("watchdog: cannot look for a cancel request: %s", exc)
            close_old_connections()
            return False

    # -- soft limit ---------------------------------------------------------------------
    def _raise_soft(self, watched: _Watched, exc: BaseException) -> None:
        logger.warning("job %s[%s]: %s", watched.job.function, watched.key, exc)
        with self._lock:
            if self._current is not watched:
                return  # it ended meanwhile
            if watched.thread == self._main and self._handler_installed:
                watched.pending.append(exc)
                # Interrupts a sleep or a blocking read with EINTR; the handler raises.
                signal.pthread_kill(watched.thread, SOFT_SIGNAL)
                return
            # Another thread (a worker run in a thread): raised at its next bytecode.
            ctypes.pythonapi.PyThreadState_SetAsyncExc(
                ctypes.c_ulong(watched.thread), ctypes.py_object(type(exc))
            )

    def _on_soft_signal(self, signum: int, frame: object) -> None:
        watched = self._current
        if watched is not None and watched.pending:
            raise watched.pending.pop()

    # -- ending a job -------------------------------------------------------------------
    def _end(self, watched: _Watched, status: Status, error: str) -> None:
        """Record, report, then end the process; the lock keeps the worker from going on."""
        self._lock.acquire()
        if self._current is not watched:
            self._lock.release()
            return
        function, key = watched.job.function, watched.key
        logger.error("job %s[%s] %s: %s", function, key, status.value, error)
        try:
            running = Job.objects.for_key(function, key).running()
            if watched.execution:  # a copy that took over the claim keeps the record
                running = running.filter(execution=watched.execution)
            running.end(status, error)
        except DatabaseError:
            # Unrecorded, the job is requeued when the process ends; its next worker
            # runs it again (MAX_ATTEMPTS bounds that).
            logger.exception("job %s[%s]: the outcome was not recorded", function, key)
        else:
            with contextlib.suppress(Exception):
                watched.job.send(Command.WORK_FAIL)
            try:
                signals.send_finished(function, key)  # the outcome is committed
            except Exception:
                logger.exception("job %s[%s]: a job_finished receiver failed", function, key)
        self._tell("ended", status=status.value, error=error)
        if self.end_process is None:
            # A worker in a thread of a test: nothing can stop the thread; let it go on.
            self._current = None
            self._lock.release()
            return
        logger.error("ending worker process to stop job %s[%s]", function, key)
        self.end_process()
