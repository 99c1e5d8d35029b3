"""Runs the worker loop in N processes, restarts those that die, stops them gracefully.

With ``max_jobs_per_child`` or ``max_memory_per_child`` a worker process exits after
a job once it reached the limit, and a new one takes its slot
(:mod:`~django_gearattach.worker.recycling`). A process whose watchdog ended it to stop a
job (a hard time limit, a cancel) is replaced the same way; a single worker
(``--concurrency 1``) runs in the supervisor's own process, which starts anew
(``exec``) instead.

SIGTERM or SIGINT asks every worker to finish its current job and exit. With
``reload`` (``gearworker --reload``, for development) the supervisor also watches the
code and, when a file changes, stops the workers gracefully and starts anew
(:mod:`~django_gearattach.worker.reloader`).
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import sys
import time
from collections.abc import Iterable
from types import FrameType
from typing import Any

from django.db import connections

from ..conf import conf
from ..gearman.rendezvous import Address
from ..tasks import Task
from .loop import Worker
from .recycling import ENDED_BY_WATCHDOG, RECYCLED, memory_check
from .reloader import CodeWatcher, restart

logger = logging.getLogger("django_gearattach.worker.loop")

RESPAWN_DELAY = 0.5
#: Seconds between two looks at the code's modification times (``reload``).
RELOAD_INTERVAL = 1.0
PR_SET_PDEATHSIG = 1


class Supervisor:
    def __init__(
        self,
        tasks: Iterable[Task[Any, Any]],
        servers: list[Address],
        concurrency: int = 1,
        *,
        reload: bool = False,
        max_jobs_per_child: int | None = None,
        max_memory_per_child: int | None = None,
        async_concurrency: int | None = None,
    ) -> None:
        self.tasks = list(tasks)
        self.async_concurrency = async_concurrency
        self.servers = servers
        self.concurrency = concurrency
        self.reload = reload
        self.max_jobs_per_child = max_jobs_per_child
        self.max_memory_per_child = max_memory_per_child
        self.recycles = max_jobs_per_child is not None or max_memory_per_child is not None
        self.children: dict[int, int] = {}  # pid -> slot
        self.stopping = False
        self.reloading = False

    def run(self) -> None:
        names = ", ".join(sorted(t.name for t in self.tasks))
        logger.info(
            "gearworker pid %s: %s process(es) on %s for %s",
            os.getpid(),
            self.concurrency,
            ", ".join(map(str, self.servers)),
            names,
        )
        if self.concurrency == 1 and not self.reload and not self.recycles:
            self._run_inline(end_process=_start_anew)
        else:
            self._run_children()
        if self.reloading and not self.stopping:
            logger.info("gearworker pid %s: starting again with the changed code", os.getpid())
            restart()
        logger.info("gearworker pid %s stopped", os.getpid())

    def _run_inline(self, end_process: Any) -> None:
        worker = Worker(self.tasks, self.servers, async_concurrency=self.async_concurrency)
        worker.watchdog.end_process = end_process
        worker.recycle_after = memory_check(self.max_memory_per_child)

        def on_signal(signum: int, frame: FrameType | None) -> None:
            logger.info("signal %s: finishing the current job, then exiting", signum)
            worker.stop()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        worker.run(max_jobs=self.max_jobs_per_child)

    def _spawn(self, slot: int) -> None:
        connections.close_all()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the child
            code = 0
            try:
                signal.signal(signal.SIGINT, signal.SIG_IGN)
                _die_with_parent()
                self._run_inline(end_process=_exit_ended)
            except BaseException:
                logger.exception("worker process crashed")
                code = 1
            finally:
                _flush_traces()  # os._exit skips atexit, where the SDK would export them
                os._exit(code)
        self.children[pid] = slot

    def _run_children(self) -> None:
        def on_signal(signum: int, frame: FrameType | None) -> None:
            self.stopping = True
            self._stop_children()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        watcher = CodeWatcher() if self.reload else None
        for slot in range(self.concurrency):
            self._spawn(slot)
        while self.children:
            try:
                pid, status = self._wait(watcher)
            except ChildProcessError:
                break
            except InterruptedError:
                continue
            if pid == 0:  # a look at the code is due
                assert watcher is not None
                changed = watcher.changed()
                if changed is not None and not (self.stopping or self.reloading):
                    logger.info("%s changed: stopping the worker processes to reload", changed)
                    self.reloading = True
                    self._stop_children()
                continue
            if pid not in self.children:
                continue
            slot = self.children.pop(pid)
            code = os.waitstatus_to_exitcode(status)
            if self.recycles and code == RECYCLED and not (self.stopping or self.reloading):
                logger.info("worker process %s recycled; starting another", pid)
                self._spawn(slot)
            elif code == ENDED_BY_WATCHDOG and not (self.stopping or self.reloading):
                logger.info("worker process %s ended to stop its job; starting another", pid)
                self._spawn(slot)
            elif not (self.stopping or self.reloading):
                logger.warning(
                    "worker process %s exited (status %s); starting another", pid, status
                )
                time.sleep(RESPAWN_DELAY)
                if not (self.stopping or self.reloading):  # a signal may have come meanwhile
                    self._spawn(slot)

    def _wait(self, watcher: CodeWatcher | None) -> tuple[int, int]:
        """The next child to exit; (0, 0) when the code is due another look."""
        if watcher is None or self.reloading:
            return os.wait()
        deadline = time.monotonic() + RELOAD_INTERVAL
        while True:
            pid, status = os.waitpid(-1, os.WNOHANG)
            if pid or time.monotonic() >= deadline:
                return pid, status
            time.sleep(0.05)

    def _stop_children(self) -> None:
        """SIGTERM every worker process: each finishes its current job, then exits."""
        for pid in list(self.children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)


def _exit_ended() -> None:  # pragma: no cover - runs in a child
    """End a worker process whose watchdog stopped its job (the supervisor replaces it)."""
    with contextlib.suppress(Exception):
        sys.stderr.flush()
    os._exit(ENDED_BY_WATCHDOG)


def _flush_traces() -> None:  # pragma: no cover - runs in a child
    if conf.TRACING:
        from ..tracing.run import flush

        flush()


def _start_anew() -> None:
    """End the single worker process's job by starting the command anew (``exec``)."""
    connections.close_all()
    restart()


def _die_with_parent() -> None:
    """Ask Linux to SIGTERM this child if the supervisor dies (even by SIGKILL)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):  # not Linux: the supervisor's own SIGTERM must do
        pass
