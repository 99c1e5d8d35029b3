"""One run's claim on its job's record: the one place that knows whether the run holds it.

A run starts when its running mark commits (:mod:`.fencing`: a new ``execution`` id
and a lease). From then on, everything the run writes and everything it sends to
gearmand goes through its :class:`Claim`, from whatever thread: the loop (reports, the
outcome), the lease keeper (renewals), the watchdog (time limits, cancels) and the
task itself (a retry, through :class:`~django_gearattach.tasks.JobContext`).

* Every write is one UPDATE conditioned on the record still running under this
  run's ``execution``. A write that matches no row means the run lost its claim (its
  lease expired and another copy of the job took the record over): the claim is
  *lost*, and nothing more is written or sent for the run.
* The run's outcome (or its retry) ends the claim; only the writer that ended it,
  the loop or the watchdog, sends the job's final packet, once. An outcome write is
  also conditioned on no run waiting to follow this one (a follow-up, a replacement:
  :mod:`~django_gearattach.runs`); when one waits, the record is handed over to it
  instead, which ends the claim too (:attr:`Claim.successor`).
* Writes and sends are serialised by the claim's lock, so the watchdog's packets never
  interleave with the loop's on the job's connection, and a report never follows the
  final packet.

A run that lost its claim ends without an outcome of its own; what its copy of the
job answers is decided by the loop (:meth:`~.loop.Worker._answer_when_done`).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from django.db import InterfaceError, OperationalError

from .. import records, runs
from ..conf import conf
from ..gearman.protocol import Command
from ..gearman.worker import Assignment
from ..models import Job, JobQuerySet, Status, ended
from ..payload import shown

logger = logging.getLogger("django_gearattach.worker.loop")

#: Seconds a worker keeps trying to write a finished run's outcome while the database
#: does not answer, before it drops the job, which gearmand then requeues: to run again.
#: None (the default) means ``LEASE``, counted from the write: no other copy of the job
#: may run before the run's lease ends anyway, so holding on that long costs nothing,
#: and an outage shorter than that runs nothing twice. A number caps it lower.
OUTCOME_PATIENCE: float | None = None

HELD, ENDED, LOST = "held", "ended", "lost"
_RUNNING = (Status.RUNNING.value,)

_T = TypeVar("_T")


class Claim:
    """The claim of one run (``execution``) on the record of ``job``."""

    def __init__(self, job: Assignment, key: str, execution: str) -> None:
        self.job = job
        self.function = job.function
        self.key = key
        self.execution = execution
        #: :data:`HELD`, then :data:`ENDED` (this run's outcome or retry is written) or
        #: :data:`LOST` (a write matched no row: another run holds the record).
        self.state = HELD
        #: Who ended it: "run" (the loop, or a retry) or "watchdog".
        self.ended_by = ""
        self.final_sent = False
        #: The record as the run that waited for this one left it, when this run's end
        #: handed the record over to it (see :meth:`_hand_over`).
        self.successor: Job | None = None
        self._lock = threading.RLock()

    def __repr__(self) -> str:
        return f"<Claim {self.function}[{self.key}] {self.execution} {self.state}>"

    @property
    def held(self) -> bool:
        return self.state == HELD

    def _settle(self, count: int, ends: str = "") -> bool:
        """Note what a write's row count says about the claim; True when it matched."""
        if count:
            if ends:
                self.state, self.ended_by = ENDED, ends
            return True
        if self.state == HELD:
            self.state = LOST
            logger.warning(
                "job %s[%s]: this run lost its claim (another run holds the record): it "
                "writes and reports nothing more",
                self.function,
                self.key,
            )
        return False

    # -- writes ---------------------------------------------------------------------------
    def spec(self, fields: dict[str, Any], *, outcome: bool = False) -> records.Update:
        """An UPDATE of the record that matches only while this run holds it (and, for
        an ``outcome``, while no run waits to follow it)."""
        return records.Update(
            self.function,
            self.key,
            fields,
            statuses=_RUNNING,
            execution=self.execution,
            no_successor=outcome,
        )

    def _update(self, fields: dict[str, Any], *, outcome: bool = False) -> int:
        return records.update(
            self.function,
            self.key,
            fields,
            statuses=_RUNNING,
            execution=self.execution,
            no_successor=outcome,
        )

    def _hand_over(self, status: Status, fields: dict[str, Any]) -> int:
        """The outcome write matched no row: if a run waits to follow this one, the
        record becomes that run's (:func:`~django_gearattach.runs.hand_over`). 1 when it
        did, 0 when this run does not hold the record (its claim is lost)."""
        self.successor = runs.hand_over(self.function, self.key, self.execution, status, fields)
        return 0 if self.successor is None else 1

    def _end_write(self, status: Status, fields: dict[str, Any]) -> int:
        return self._update(ended(status) | fields, outcome=True) or self._hand_over(
            status, fields
        )

    def held_rows(self) -> JobQuerySet:
        """The record, while this run holds it (for writes the hot path does not make)."""
        return (
            Job.objects.for_key(self.function, self.key).running().filter(execution=self.execution)
        )

    def write(self, fields: dict[str, Any]) -> bool:
        """Write reports (progress, data) or a new lease; False once the claim is lost."""
        with self._lock:
            if not self.held:
                return False
            return self._settle(self._update(fields))

    def settle(self, count: int) -> bool:
        """Note the row count of a write conditioned on this claim that was made without
        its lock (a stream's batch, which must not hold up the run's packets); True when
        it matched. A write that matched nothing while the claim was held loses it."""
        with self._lock:
            return self._settle(count)

    def end(self, status: Status, fields: dict[str, Any], *, by: str = "run") -> bool:
        """Write the run's outcome; True when it was written (and the claim ended).

        The loop (``by="run"``) is patient with a database that does not answer (see
        :data:`OUTCOME_PATIENCE`); the watchdog writes once.
        """
        with self._lock:
            if not self.held:
                return False
            if by == "run":
                count = patiently(lambda: self._end_write(status, fields), self.name)
            else:
                count = self._end_write(status, fields)
            return self._settle(count, ends=by)

    def end_together(
        self, status: Status, fields: dict[str, Any], other: Callable[[], records.Update]
    ) -> tuple[bool, int]:
        """:meth:`end` in one statement with ``other()`` (the running mark of the job
        grabbed ahead); returns whether the outcome was written, and ``other``'s count."""
        outcome = ended(status) | fields
        with self._lock:
            if not self.held:
                return False, 0
            written, counted = patiently(
                lambda: records.update_together(self.spec(outcome, outcome=True), other()),
                self.name,
            )
            if not written:
                written = patiently(lambda: self._hand_over(status, fields), self.name)
            return self._settle(written, ends="run"), counted

    def requeue(self, status: Status, **fields: Any) -> bool:
        """End the run by putting the job back to waiting (a retry); True when written.

        Refused when the claim is lost, and when a cancel was requested for this run
        (the claim stays held: the run is to end cancelled, see :meth:`cancel_requested`).
        """
        with self._lock:
            if not self.held:
                return False
            rows = self.held_rows().filter(cancel_requested_at=None)
            if rows.requeue(status, **fields):
                return self._settle(1, ends="run")
            if not self.held_rows().exists():
                self._settle(0)
            return False

    def renew(self) -> bool:
        """Extend the lease (the lease keeper); False once the claim is lost or ended."""
        from .fencing import lease_end

        return self.write({"lease_until": lease_end()})

    def cancel_requested(self) -> bool:
        """Whether someone asked to cancel this run (one indexed SELECT)."""
        return self.held_rows().filter(cancel_requested_at__isnull=False).exists()

    # -- packets --------------------------------------------------------------------------
    def send(self, command: Command, *args: bytes | str | int) -> bool:
        """Send a report of the run (WORK_STATUS, WORK_DATA...) while it holds its claim."""
        with self._lock:
            if not self.held:
                return False
            self.job.send(command, *args)
            return True

    def send_final(
        self, command: Command, *args: bytes | str | int, deferred: bool = False
    ) -> bool:
        """Send the job's final packet, once, after this run's outcome (or retry) was
        written; ``deferred`` leaves it to go with the next request on the connection."""
        with self._lock:
            if self.state != ENDED or self.final_sent:
                return False
            self.final_sent = True
            if deferred:
                self.job.send_last(command, *args)
            else:
                self.job.send(command, *args)
            return True

    @property
    def name(self) -> str:
        return f"{self.function}[{shown(self.key)}]"


def end_many(ends: list[tuple[Claim, Status, dict[str, Any]]]) -> list[bool]:
    """:meth:`Claim.end` (``by="run"``) of several runs of distinct records, their
    outcomes committed in one transaction (the asyncio runner's group commit)."""
    with contextlib.ExitStack() as stack:
        for claim, _, _ in ends:
            stack.enter_context(claim._lock)
        live = [i for i, (claim, _, _) in enumerate(ends) if claim.held]
        specs = [ends[i][0].spec(ended(ends[i][1]) | ends[i][2], outcome=True) for i in live]
        counts = patiently(lambda: records.update_together(*specs), "outcomes") if specs else []
        written = [False] * len(ends)
        for i, count in zip(live, counts, strict=True):
            claim, status, fields = ends[i]
            if not count:
                count = patiently(functools.partial(claim._hand_over, status, fields), claim.name)
            written[i] = claim._settle(count, ends="run")
        return written


def patiently(write: Callable[[], _T], name: str) -> _T:
    """Run an outcome write, again and again while the database does not answer, for
    up to :data:`OUTCOME_PATIENCE` (``LEASE``) seconds (the write is conditioned on the
    run's claim, so a late one never overwrites another run's outcome)."""
    patience = conf.LEASE if OUTCOME_PATIENCE is None else min(OUTCOME_PATIENCE, conf.LEASE)
    deadline = time.monotonic() + patience
    pause = 0.05
    while True:
        try:
            return write()
        except (OperationalError, InterfaceError) as exc:  # not a bad value: it never passes
            if time.monotonic() + pause > deadline:
                raise
            logger.warning(
                "job %s: its outcome is not written yet (%s); trying again in %.2fs",
                name,
                exc,
                pause,
            )
            records.drop_broken_connections()
            time.sleep(pause)
            pause = min(pause * 2, 1.0)
