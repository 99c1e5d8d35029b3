"""Runs the worker loop in N processes, restarts those that die, stops them gracefully.

SIGTERM or SIGINT asks every worker to finish its current job and exit.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import time
from collections.abc import Iterable
from types import FrameType
from typing import Any

from django.db import connections

from .gearman.routing import Address
from .tasks import Task
from .worker import Worker

logger = logging.getLogger("django_gearattach.worker")

RESPAWN_DELAY = 0.5
PR_SET_PDEATHSIG = 1


class Supervisor:
    def __init__(
        self, tasks: Iterable[Task[Any, Any]], servers: list[Address], concurrency: int = 1
    ) -> None:
        self.tasks = list(tasks)
        self.servers = servers
        self.concurrency = concurrency
        self.children: dict[int, int] = {}  # pid -> slot
        self.stopping = False

    def run(self) -> None:
        names = ", ".join(sorted(t.name for t in self.tasks))
        logger.info(
            "gearworker pid %s: %s process(es) on %s for %s",
            os.getpid(),
            self.concurrency,
            ", ".join(map(str, self.servers)),
            names,
        )
        if self.concurrency == 1:
            self._run_inline()
        else:
            self._run_children()
        logger.info("gearworker pid %s stopped", os.getpid())

    def _run_inline(self) -> None:
        worker = Worker(self.tasks, self.servers)

        def on_signal(signum: int, frame: FrameType | None) -> None:
            logger.info("signal %s: finishing the current job, then exiting", signum)
            worker.stop()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        worker.run()

    def _spawn(self, slot: int) -> None:
        connections.close_all()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the child
            code = 0
            try:
                signal.signal(signal.SIGINT, signal.SIG_IGN)
                _die_with_parent()
                self._run_inline()
            except BaseException:
                logger.exception("worker process crashed")
                code = 1
            finally:
                os._exit(code)
        self.children[pid] = slot

    def _run_children(self) -> None:
        def on_signal(signum: int, frame: FrameType | None) -> None:
            self.stopping = True
            for pid in list(self.children):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        for slot in range(self.concurrency):
            self._spawn(slot)
        while self.children:
            try:
                pid, status = os.wait()
            except ChildProcessError:
                break
            except InterruptedError:
                continue
            if pid not in self.children:
                continue
            slot = self.children.pop(pid)
            if not self.stopping:
                logger.warning(
                    "worker process %s exited (status %s); starting another", pid, status
                )
                time.sleep(RESPAWN_DELAY)
                if not self.stopping:  # a SIGTERM may have come during the pause
                    self._spawn(slot)


def _die_with_parent() -> None:
    """Ask Linux to SIGTERM this child if the supervisor dies (even by SIGKILL)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):  # not Linux: the supervisor's own SIGTERM must do
        pass
