"""A running task's reports: to gearmand at once, to its record at most every interval.

Every report goes through the run's :class:`~.claim.Claim`: a run that lost its
claim sends and writes nothing more.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from .. import signals
from ..gearman.protocol import Command
from ..models import Job
from ..payload import dumps
from . import fencing
from .claim import Claim


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

    def _save(self, **fields: Any) -> None:
        self._unsaved.update(fields)
        if _on_event_loop():
            # An async def task run to its end in this thread (immediate mode): the
            # database must not be called from its loop; the outcome's write takes these.
            return
        now = time.monotonic()
        if now - self._last_write >= self.interval:
            # The heartbeat rides on the progress write: it renews the run's claim.
            fields = self.pending() | {"lease_until": fencing.lease_end()}
            if self.claim.write(fields) and self.keeper is not None:
                self.keeper.renewed()
            self._last_write = now

    def pending(self) -> dict[str, Any]:
        """Reports not written yet; the final update of the record carries them."""
        fields, self._unsaved = self._unsaved, {}
        return fields


def _on_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True
