"""The recovery sweep: resubmit active records whose job gearmand no longer holds.

gearmand can lose a job while its record says ``scheduled``, ``queued`` or
``running``:

* gearmand restarted (or was killed) without a persistent queue;
* an attacher process that was following a queued job in the foreground is killed
  (or exits) before a worker starts the job: gearmand drops a queued job whose last
  foreground client leaves (see :doc:`attach`);
* an attacher left a running job and its worker then died: gearmand requeues the job
  and drops it at once for the same reason;
* a submitter died between inserting the record and reaching gearmand.

Every ``gearworker`` process calls :meth:`Sweeper.run_if_due` on a thread of its own
(:mod:`.sweeping`), whatever job it runs; one of them sweeps, the one that holds the
``recovery-leader`` lock (:mod:`.sweeplock`: a PostgreSQL advisory lock shared by
every host, elsewhere a file lock per host). When it dies or stops, another worker
takes the lock over at its next check. Each pass also holds
the ``recovery-pass`` lock, so ``manage.py gearattach recover`` never sweeps at the
same time as a worker.

A pass reads the next batch of records of each active status (an index range scan on
``(status, created_at)``, continued from where the last pass stopped, so every record
is visited in turn and no pass reads more than ``3 x BATCH`` rows). A running record
whose claim is live (see :mod:`.fencing`) is skipped: its worker runs it and writes
its outcome. The others are looked up on their home server with pipelined
``GET_STATUS_UNIQUE`` (on the next server in the key's route when the home server
does not answer). A record that no server knows on two passes at least
``RECOVERY_GRACE`` seconds apart (a job being submitted or rescheduled is briefly
unknown) is resubmitted from its stored arguments, as a background attach marker:

* a scheduled job with its original time (``SUBMIT_JOB_EPOCH``);
* ``recoveries`` counts the resubmissions; a record that was resubmitted, or whose
  runs were started, ``MAX_ATTEMPTS`` times already is marked ``lost`` instead.

The worker that gets the marker claims the record and runs the task, or answers from
the record if it finished meanwhile, so a resubmission never runs a job twice.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

from django.db.models import F, Q, QuerySet
from django.utils import timezone

from ..clients import get_client, servers_for
from ..conf import conf
from ..gearman.client import UniqueStatus
from ..gearman.errors import GearmanError
from ..gearman.rendezvous import Address
from ..models import Job, Status
from ..payload import ATTACH_MARKER
from ..scheduling import pending_epoch
from .sweeplock import SweepLock

logger = logging.getLogger("django_gearattach.worker.recovery")

#: Records read per status and pass.
BATCH = 500
#: The statuses swept, in this order.
SWEPT = (Status.SCHEDULED, Status.QUEUED, Status.RUNNING)
_FIELDS = (
    "id",
    "function",
    "key",
    "status",
    "server",
    "priority",
    "created_at",
    "scheduled_for",
    "attempts",
    "recoveries",
    "lease_until",
)

Target = tuple[str, str]


@dataclass(frozen=True)
class Action:
    """What the sweep did to one record (or would do, in a dry run)."""

    record: Job
    kind: str  # "resubmitted" or "lost"
    address: Address | None
    dry_run: bool = False
    epoch: int | None = None

    def __str__(self) -> str:
        what = f"{self.record.function}[{self.record.key}] ({self.record.status})"
        verb = ("would be " if self.dry_run else "") + self.kind
        if self.kind == "lost":
            return (
                f"{what} {verb}: runs started {self.record.attempts}, resubmitted "
                f"{self.record.recoveries} times (MAX_ATTEMPTS {conf.MAX_ATTEMPTS})"
            )
        when = ""
        if self.epoch is not None:
            when = f" for {self.record.scheduled_for.isoformat()}"  # type: ignore[union-attr]
        return f"{what} {verb} to {self.address}{when}"


@dataclass
class Sweeper:
    """One process's sweep state: where each status's last batch ended, the suspects."""

    batch: int = BATCH
    grace: float | None = None  # None: RECOVERY_GRACE
    last_run: float = field(default=float("-inf"))
    next_run: float | None = None  # the first pass comes one interval after the first call
    unreachable: set[Address] = field(default_factory=set)  # in the last pass
    _cursors: dict[str, tuple[datetime, UUID] | None] = field(default_factory=dict)
    _suspects: dict[Target, float] = field(default_factory=dict)
    _round: set[Target] = field(default_factory=set)  # seen since the round began
    _leader: SweepLock | None = None
    _pass: SweepLock | None = None

    def run_if_due(self) -> list[Action]:
        """:meth:`sweep` when ``RECOVERY_INTERVAL`` seconds have passed since the last one,
        and this process leads the sweep."""
        now = time.monotonic()
        if self.next_run is None:
            self.next_run = now + conf.RECOVERY_INTERVAL
        if now < self.next_run:  # the common case, between two jobs: nothing else
            return []
        self.last_run, self.next_run = now, now + conf.RECOVERY_INTERVAL
        try:
            if self._leader is None:
                self._leader, self._pass = SweepLock("recovery-leader"), SweepLock("recovery")
            if not self._leader.held():
                self._suspects.clear()  # what another leader saw is not known here
                if not self._leader.acquire():
                    return []
            assert self._pass is not None
            if not self._pass.acquire():
                return []  # a sweep run by hand
            try:
                return self.sweep()
            finally:
                self._pass.release()
        except Exception:  # a sweep must never stop the worker
            logger.exception("recovery sweep failed")
            return []

    def close(self) -> None:
        """Give up the leader lock (the worker stops)."""
        try:
            if self._leader is not None and self._leader.held():
                self._leader.release()
        except Exception:  # a broken connection releases a PostgreSQL lock by itself
            logger.debug("recovery-leader lock not released", exc_info=True)
        self._leader = None

    def sweep(self, dry_run: bool = False) -> list[Action]:
        """One pass over the next batch of each active status; return what it did."""
        records = self._next_batch()
        actions = self.check(records, dry_run)
        self._round |= {(r.function, r.key) for r in records}
        if all(self._cursors.get(status) is None for status in SWEPT):
            # A round over every active record ended: forget the suspects it did not see
            # (finished, or claimed, since).
            self._suspects = {t: v for t, v in self._suspects.items() if t in self._round}
            self._round = set()
        return actions

    def batches(self) -> Iterator[list[Job]]:
        """Every active record, batch by batch (``gearattach recover``)."""
        self._cursors.clear()
        statuses = list(SWEPT)
        while statuses:
            records = self._next_batch(statuses)
            if records:
                yield records
            statuses = [s for s in statuses if self._cursors.get(s) is not None]

    @property
    def suspects(self) -> list[Target]:
        return list(self._suspects)

    def check(self, records: list[Job], dry_run: bool = False) -> list[Action]:
        """Resubmit those of ``records`` that no server has known for the grace period."""
        unknown, self.unreachable = _locate(records)
        now = time.monotonic()
        grace = conf.RECOVERY_GRACE if self.grace is None else self.grace
        for target in {(r.function, r.key) for r in records} - set(unknown):
            self._suspects.pop(target, None)  # gearmand has it (again)
        due = []
        for target, (record, address) in unknown.items():
            first = self._suspects.setdefault(target, now)
            if now - first >= grace:
                due.append((record, address))
        actions = []
        for record, address in _unknown_elsewhere(due, self.unreachable):
            action = _recover(record, address, dry_run)
            if action is not None:
                if not dry_run:
                    self._suspects.pop((record.function, record.key), None)
                actions.append(action)
        if actions and not dry_run:
            lost = sum(a.kind == "lost" for a in actions)
            logger.warning(
                "recovery sweep: %d job(s) that gearmand had lost resubmitted, %d marked lost",
                len(actions) - lost,
                lost,
            )
        return actions

    def _batch_query(self, status: str) -> QuerySet[Job]:
        """The next batch of ``status``: an index range scan on (status, created_at)."""
        query = Job.objects.filter(status=status)
        if status == Status.RUNNING:  # a live claim: its worker is on it
            query = query.filter(Q(lease_until__isnull=True) | Q(lease_until__lt=timezone.now()))
        cursor = self._cursors.get(status)
        if cursor is not None:
            created, pk = cursor
            query = query.filter(Q(created_at__gt=created) | Q(created_at=created, id__gt=pk))
        return query.order_by("created_at", "id").only(*_FIELDS)[: self.batch]

    def _next_batch(self, statuses: Iterable[str] = SWEPT) -> list[Job]:
        batch: list[Job] = []
        for status in statuses:
            records = list(self._batch_query(status))
            full = len(records) == self.batch
            self._cursors[status] = (records[-1].created_at, records[-1].id) if full else None
            batch += records
        return batch


def _route(record: Job) -> list[Address]:
    """The record's servers: its home (where it was sent) first, then its key's route."""
    ordered = servers_for(record.function, record.key)
    if record.server:
        try:
            home = Address.parse(record.server)
        except ValueError:
            return ordered
        return [home, *(a for a in ordered if a != home)]
    return ordered


def _statuses(address: Address, uniques: list[bytes]) -> list[UniqueStatus]:
    """``GET_STATUS_UNIQUE`` for ``uniques``, tried twice: a kept connection to a
    gearmand that restarted fails once, and the second try connects again."""
    try:
        return get_client().status_unique_many(address, uniques)
    except GearmanError:
        return get_client().status_unique_many(address, uniques)


def _locate(records: list[Job]) -> tuple[dict[Target, tuple[Job, Address]], set[Address]]:
    """The records that the first server answering on their route does not know.

    Returns them with that server (where a resubmission goes), and the servers that did
    not answer.
    """
    down: set[Address] = set()
    unknown: dict[Target, tuple[Job, Address]] = {}
    pending = [(record, _route(record)) for record in records]
    while pending:
        by_server: dict[Address, list[tuple[Job, list[Address]]]] = {}
        for record, route in pending:
            route = [a for a in route if a not in down]
            if route:  # else no server answers: nothing can be told
                by_server.setdefault(route[0], []).append((record, route))
        pending = []
        for address, group in by_server.items():
            try:
                statuses = _statuses(address, [r.key.encode() for r, _ in group])
            except GearmanError as exc:
                logger.warning("recovery sweep: %s does not answer (%s)", address, exc)
                down.add(address)
                pending += group  # ask the next server on their route
                continue
            for (record, _), status in zip(group, statuses, strict=True):
                if not status.known:
                    unknown[record.function, record.key] = (record, address)
    return unknown, down


def _unknown_elsewhere(
    due: list[tuple[Job, Address]], down: set[Address]
) -> list[tuple[Job, Address]]:
    """Those of ``due`` that no other answering server knows either (an attacher may
    have revived the job on another server)."""
    if not due:
        return []
    known: set[Target] = set()
    for address in conf.SERVERS:
        if address in down:
            continue
        group = [record for record, home in due if home != address]
        if not group:
            continue
        try:
            statuses = _statuses(address, [r.key.encode() for r in group])
        except GearmanError:
            continue  # a copy there, if any, is fenced (see fencing.py)
        for record, status in zip(group, statuses, strict=True):
            if status.known:
                known.add((record.function, record.key))
    return [(r, a) for r, a in due if (r.function, r.key) not in known]


def _unchanged(record: Job) -> Q:
    """The record as the sweep read it, and no live claim on it."""
    return Q(pk=record.pk, status=record.status, recoveries=record.recoveries) & (
        ~Q(status=Status.RUNNING) | Q(lease_until__isnull=True) | Q(lease_until__lt=timezone.now())
    )


def _submit(record: Job, address: Address, epoch: int | None) -> None:
    client, unique = get_client(), record.key.encode()
    if epoch is not None:
        client.submit_epoch(address, record.function, unique, epoch, ATTACH_MARKER)
    else:
        client.submit_background(address, record.function, unique, ATTACH_MARKER, record.priority)


def _recover(record: Job, address: Address, dry_run: bool) -> Action | None:
    limit = conf.MAX_ATTEMPTS
    if record.attempts >= limit or record.recoveries >= limit:
        if dry_run:
            return Action(record, "lost", None, dry_run=True)
        message = (
            f"gearmand lost the job, and it was started {record.attempts} and resubmitted "
            f"{record.recoveries} times already (GEARATTACH['MAX_ATTEMPTS'] is {limit})"
        )
        marked = Job.objects.filter(_unchanged(record)).lose(message)
        if not marked:
            return None
        logger.error("recovery sweep: %s[%s] lost: %s", record.function, record.key, message)
        return Action(record, "lost", None)
    epoch = pending_epoch(record.scheduled_for) if record.status == Status.SCHEDULED else None
    if dry_run:
        return Action(record, "resubmitted", address, dry_run=True, epoch=epoch)
    changes: dict[str, Any] = {"recoveries": F("recoveries") + 1, "server": str(address)}
    unchanged = Job.objects.filter(_unchanged(record))
    if record.status == Status.RUNNING:  # its run is over: it waits in gearmand again
        updated = unchanged.requeue(**changes)
    else:
        updated = unchanged.update(**changes)
    if not updated:
        return None  # it finished, started or was resubmitted meanwhile
    try:
        try:
            _submit(record, address, epoch)
        except GearmanError:
            _submit(record, address, epoch)  # once more, on a new connection
    except GearmanError as exc:
        # Counted all the same: the next pass tries again, MAX_ATTEMPTS times at most.
        logger.warning(
            "recovery sweep: cannot resubmit %s[%s]: %s", record.function, record.key, exc
        )
        return None
    action = Action(record, "resubmitted", address, epoch=epoch)
    logger.info("recovery sweep: gearmand had lost it: %s", action)
    return action
