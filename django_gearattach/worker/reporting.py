"""A running task's reports: to gearmand at once, to its record at most every interval.

A stream's chunks go to gearmand at once too, and to the database in batches
(:mod:`.streaming`).

Every report goes through the run's :class:`~.claim.Claim`: a run that lost its
claim sends and writes nothing more.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from django.db import connections

from .. import signals
from ..gearman.protocol import Command
from ..models import Job
from ..payload import dumps
from . import fencing
from .claim import Claim
from .streaming import RunStream

T = TypeVar("T")


class Reporter:
    """Sends a running task's reports to gearmand and (throttled) to its record."""

    def __init__(
        self, claim: Claim, interval: float, keeper: fencing.LeaseKeeper | None = None
    ) -> None:
        self.claim = claim
        self.interval = interval
        self.keeper = keeper
        # The first write comes one interval after the start, not at the first report: a
        # job shorter than that writes its reports with its outcome, in one statement.
        self._last_write = time.monotonic() if interval > 0 else float("-inf")
        self._unsaved: dict[str, Any] = {}
        self._record: Job | None = None  # read only for job_progress receivers
        self._stream: RunStream | None = None

    def progress(self, numerator: int, denominator: int) -> None:
        self.claim.send(Command.WORK_STATUS, numerator, denominator)
        self._save(progress_numerator=numerator, progress_denominator=denominator)
        if signals.job_progress.receivers and not _on_event_loop():
            self._record = signals.send_progress(
                self._record, self.claim.function, self.claim.key, numerator, denominator
            )

    def data(self, value: Any) -> None:
        raw = dumps(value)
        self.claim.send(Command.WORK_DATA, raw)
        self._save(data=json.loads(raw))

    def warning(self, message: str) -> None:
        self.claim.send(Command.WORK_WARNING, message)

    def stream(self, chunk: Any) -> None:
        """Append ``chunk`` to the run's stream: sent at once, written in batches by a
        thread of the run's own (by this thread in immediate mode: no ``keeper``)."""
        if self._stream is None:
            self._stream = RunStream(
                self.claim, background=self.keeper is not None, keeper=self.keeper
            )
        # An async def task run to its end in this thread (immediate mode): its batches
        # are written by a thread, as Django calls no database from an event loop.
        off_loop(self._stream.append, chunk)

    async def astream(self, chunk: Any) -> None:
        """:meth:`stream` from a coroutine (immediate mode: see :meth:`stream`)."""
        self.stream(chunk)

    def close(self) -> None:
        """The run is over: stop its stream's writer, writing what it holds only while
        the run still holds its claim (a run that ended without :meth:`pending`)."""
        if self._stream is not None:
            stream, self._stream = self._stream, None
            stream.close(write=self.claim.held)

    def _save(self, **fields: Any) -> None:
        self._unsaved.update(fields)
        if _on_event_loop():
            # An async def task run to its end in this thread (immediate mode): the
            # database must not be called from its loop; the outcome's write takes these.
            return
        now = time.monotonic()
        if now - self._last_write >= self.interval:
            # The heartbeat rides on the progress write: it renews the run's claim.
            fields = self._take() | {"lease_until": fencing.lease_end()}
            if self.claim.write(fields) and self.keeper is not None:
                self.keeper.renewed()
            self._last_write = now

    def pending(self) -> dict[str, Any]:
        """Reports not written yet; the final update of the record carries them. The
        stream's last chunks are written first (so a record that says the run ended has
        all of them)."""
        self.close()
        return self._take()

    def _take(self) -> dict[str, Any]:
        fields, self._unsaved = self._unsaved, {}
        return fields


def off_loop(func: Callable[..., T], *args: Any) -> T:
    """``func(*args)`` here, or, when this thread runs an event loop, in a thread of its
    own that closes its database connections (Django calls no database from a loop)."""
    if not _on_event_loop():
        return func(*args)

    def call() -> T:
        try:
            return func(*args)
        finally:
            connections.close_all()

    with ThreadPoolExecutor(1, thread_name_prefix="gearattach-off-loop") as pool:
        return pool.submit(call).result()


def _on_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True
