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

Limits and the grace's end apply only while the task's body runs
(:func:`~django_gearattach.timelimits.run_body`): the signal handler raises only in the
body's frames, and once the body has returned nothing interrupts the worker.

Ending a job goes through the run's :class:`~.claim.Claim`: the record is marked
(failed or cancelled) only while the run still holds its claim, and only then does
WORK_FAIL go to gearmand on the job's own connection (gearmand forgets the job: no
requeue, and attachers hear at once), under the claim's lock, so it never interleaves
with the loop's packets. A run that lost its claim (another copy holds the record)
gets no write and no packet. Either way the process ends through ``end_process`` (the
supervisor starts a new one), which stops the task. Everything runs in this thread,
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
from types import FrameType
from typing import Any

from django.db import DatabaseError, connections

from .. import cancelling, records, signals, timelimits
from ..conf import conf
from ..gearman.protocol import Command
from ..models import Status
from ..tasks import JobContext
from ..timelimits import SoftTimeLimitExceeded, TimeLimits, hard_message, soft_message
from .claim import ENDED, Claim

logger = logging.getLogger("django_gearattach.worker.loop")

#: The signal that interrupts the task's thread at its soft limit (as in Celery).
SOFT_SIGNAL = signal.SIGUSR1
#: Seconds between two looks of the watchdog thread at the running job.
TICK = 0.05
#: Seconds before the soft limit's signal is sent again while the exception waits (the
#: handler ran where it must not raise, between frames of the worker's own code).
RESEND = 0.2


@dataclass
class _Watched:
    claim: Claim
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
    resend_at: float = 0.0

    @property
    def name(self) -> str:
        return self.claim.name


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
    def watching(self, claim: Claim, limits: TimeLimits, context: JobContext) -> Iterator[None]:
        """Watch the task run inside this block."""
        limits = limits.or_defaults()
        now = time.monotonic()
        thread = threading.get_ident()
        if limits.soft is not None and thread == self._main and not self._handler_installed:
            signal.signal(SOFT_SIGNAL, self._on_soft_signal)
            self._handler_installed = True
        watched = _Watched(
            claim,
            context,
            thread,
            now + limits.soft if limits.soft is not None else None,
            limits.soft,
            now + limits.hard if limits.hard is not None else None,
            limits.hard,
            now + conf.CANCEL_CHECK_INTERVAL,
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
                logger.exception("watchdog: job %s", watched.name)
            time.sleep(TICK)

    def _look(self, watched: _Watched) -> None:
        if self.on_tick is not None:
            self.on_tick()
        now = time.monotonic()
        if watched.cancel_at is None and now >= watched.next_check:
            watched.next_check = now + conf.CANCEL_CHECK_INTERVAL
            if self._cancel_requested(watched):
                logger.info("job %s: cancel requested", watched.name)
                watched.context.cancel_requested = True
                watched.cancel_at = now + conf.CANCEL_GRACE
                self._tell("cancel_requested", grace=conf.CANCEL_GRACE)
        if not timelimits.body_running(watched.thread):
            # Not started yet, or returned: what follows the body is never interrupted.
            return
        if watched.soft_at is not None and not watched.soft_sent and now >= watched.soft_at:
            watched.soft_sent = True
            assert watched.soft is not None
            self._tell("soft_time_limit", seconds=watched.soft)
            self._raise_soft(watched, SoftTimeLimitExceeded(soft_message(watched.soft)))
        elif watched.pending and now >= watched.resend_at:
            self._signal(watched)  # the handler found the thread outside the body: again
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
            return watched.claim.cancel_requested()  # for this run only
        except DatabaseError as exc:
            logger.warning("watchdog: cannot look for a cancel request: %s", exc)
            records.drop_broken_connections()
            return False

    # -- soft limit ---------------------------------------------------------------------
    def _raise_soft(self, watched: _Watched, exc: BaseException) -> None:
        logger.warning("job %s: %s", watched.name, exc)
        with self._lock:
            if self._current is not watched:
                return  # it ended meanwhile
            if watched.thread == self._main and self._handler_installed:
                watched.pending.append(exc)
                self._signal(watched)
                return
            # Another thread (a worker run in a thread): raised at its next bytecode.
            ctypes.pythonapi.PyThreadState_SetAsyncExc(
                ctypes.c_ulong(watched.thread), ctypes.py_object(type(exc))
            )

    def _signal(self, watched: _Watched) -> None:
        # Interrupts a sleep or a blocking read with EINTR; the handler raises.
        watched.resend_at = time.monotonic() + RESEND
        signal.pthread_kill(watched.thread, SOFT_SIGNAL)

    def _on_soft_signal(self, signum: int, frame: FrameType | None) -> None:
        watched = self._current
        # Raised only inside the task's body: never in the worker's code that called it
        # (before the body, or after it returned), which must not be interrupted.
        if (
            watched is not None
            and watched.pending
            and timelimits.inside_body(watched.thread, frame)
        ):
            raise watched.pending.pop()

    # -- ending a job -------------------------------------------------------------------
    def _end(self, watched: _Watched, status: Status, error: str) -> None:
        """Record, report, then end the process; the lock keeps the worker from going on."""
        self._lock.acquire()
        if self._current is not watched:
            self._lock.release()
            return
        claim = watched.claim
        logger.error("job %s %s: %s", claim.name, status.value, error)
        try:
            written = claim.end(status, {"error": error}, by="watchdog")
        except DatabaseError:
            # Unrecorded, the job is requeued when the process ends; its next worker
            # runs it again (MAX_ATTEMPTS bounds that).
            logger.exception("job %s: the outcome was not recorded", claim.name)
        else:
            if written:
                with contextlib.suppress(Exception):
                    claim.send_final(Command.WORK_FAIL)
                try:
                    signals.send_finished(claim.function, claim.key)  # the outcome is committed
                except Exception:
                    logger.exception("job %s: a job_finished receiver failed", claim.name)
            elif claim.state == ENDED:
                # The run's own outcome came first: nothing is left to stop.
                self._lock.release()
                return
            else:
                logger.error(
                    "job %s: this run lost its claim: nothing recorded or sent, the task is "
                    "stopped",
                    claim.name,
                )
        self._tell("ended", status=status.value, error=error)
        if self.end_process is None:
            # A worker in a thread of a test: nothing can stop the thread; let it go on.
            self._current = None
            self._lock.release()
            return
        logger.error("ending worker process to stop job %s", claim.name)
        self.end_process()
