"""The recovery sweep: resubmit active records whose job gearmand no longer holds.

gearmand can lose a job while its record says ``queued`` or ``running``:

* an attacher process that was following a queued job in the foreground is killed
  (or exits) before a worker starts the job: gearmand drops a queued job whose last
  foreground client leaves (see :doc:`attach`);
* an attacher left a running job and its worker then died: gearmand requeues the job
  and drops it at once for the same reason;
* gearmand restarted without a persistent queue; a submitter died between inserting
  the record and reaching gearmand.

Each ``gearworker`` process runs :meth:`Sweeper.run_if_due` between jobs. A pass
reads a batch of active records (the next batch on each pass, so every record is
visited in turn), asks each record's server with pipelined ``GET_STATUS_UNIQUE``,
and resubmits, as a background attach marker, a record that its server did not know
on two passes at least ``RECOVERY_GRACE`` seconds apart (a job being submitted is
briefly unknown). The worker that gets the marker runs the task from the stored
arguments; a record that finished meanwhile is answered from the record, so a
resubmission never runs a job twice. A server that does not answer is skipped: its
jobs may be there.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

from django.db.models import Q

from .clients import get_client, servers_for
from .conf import conf
from .gearman.errors import GearmanError
from .gearman.routing import Address
from .models import ACTIVE, Job
from .payload import ATTACH_MARKER

logger = logging.getLogger("django_gearattach.recovery")

#: Records read per pass.
BATCH = 500


@dataclass
class Sweeper:
    """One process's sweep state: where the last batch ended, and the suspects seen."""

    batch: int = BATCH
    last_run: float = field(default=float("-inf"))
    next_run: float | None = None  # the first pass comes one interval after the first call
    _cursor: tuple[datetime, UUID] | None = None
    _suspects: dict[tuple[str, str], float] = field(default_factory=dict)

    def run_if_due(self) -> list[Job]:
        """:meth:`sweep` when ``RECOVERY_INTERVAL`` seconds have passed since the last one."""
        now = time.monotonic()
        if self.next_run is None:
            self.next_run = now + conf.RECOVERY_INTERVAL
        if now < self.next_run:  # the common case, between two jobs: nothing else
            return []
        self.last_run, self.next_run = now, now + conf.RECOVERY_INTERVAL
        try:
            return self.sweep()
        except Exception:  # a sweep must never stop the worker
            logger.exception("recovery sweep failed")
            return []

    def sweep(self) -> list[Job]:
        """One pass over the next batch of active records; return those resubmitted."""
        records = self._next_batch()
        unknown = _unknown_to_their_server(records)
        now = time.monotonic()
        seen = {(r.function, r.key) for r in records}
        for target in list(self._suspects):
            if target in seen and target not in unknown:
                del self._suspects[target]  # gearmand has it (again)
        revived = []
        for target, (record, address) in unknown.items():
            first = self._suspects.setdefault(target, now)
            if now - first < conf.RECOVERY_GRACE:
                continue
            if _resubmit(record, address):
                del self._suspects[target]
                revived.append(record)
        return revived

    def _next_batch(self) -> list[Job]:
        query = Job.objects.filter(status__in=ACTIVE).order_by("created_at", "id")
        if self._cursor is not None:
            created, pk = self._cursor
            query = query.filter(Q(created_at__gt=created) | Q(created_at=created, id__gt=pk))
        batch = list(
            query.only("id", "function", "key", "server", "priority", "created_at")[: self.batch]
        )
        self._cursor = (batch[-1].created_at, batch[-1].id) if len(batch) == self.batch else None
        return batch


def _server(record: Job) -> Address:
    if record.server:
        try:
            return Address.parse(record.server)
        except ValueError:
            pass
    return servers_for(record.function, record.key)[0]


def _unknown_to_their_server(records: list[Job]) -> dict[tuple[str, str], tuple[Job, Address]]:
    by_server: dict[Address, list[Job]] = {}
    for record in records:
        by_server.setdefault(_server(record), []).append(record)
    unknown: dict[tuple[str, str], tuple[Job, Address]] = {}
    client = get_client()
    for address, group in by_server.items():
        try:
            statuses = client.status_unique_many(address, [r.key.encode() for r in group])
        except GearmanError as exc:
            logger.warning("recovery sweep: %s does not answer (%s); skipped", address, exc)
            continue
        for record, status in zip(group, statuses, strict=True):
            if not status.known:
                unknown[record.function, record.key] = (record, address)
    return unknown


def _resubmit(record: Job, address: Address) -> bool:
    fields: dict[str, Any] = {"function": record.function, "key": record.key}
    if not Job.objects.filter(status__in=ACTIVE, **fields).exists():
        return False  # it finished meanwhile
    try:
        get_client().submit_background(
            address, record.function, record.key.encode(), ATTACH_MARKER, record.priority
        )
    except GearmanError as exc:
        logger.warning(
            "recovery sweep: cannot resubmit %s[%s]: %s", record.function, record.key, exc
        )
        return False
    logger.warning(
        "recovery sweep: gearmand %s had lost %s[%s] (%s); resubmitted it",
        address,
        record.function,
        record.key,
        record.status,
    )
    return True
