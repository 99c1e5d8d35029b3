"""The dashboard's numbers, from the job table: three queries per snapshot.

Every query is bounded by ``finished_at >= since`` on the ``gearattach_finished``
index, so its cost follows the jobs of the period, not the size of the table:

1. finished jobs per minute and outcome over the last day (both charts come from it);
2. per function, the p50, p95 and p99 of queue wait and run time over the period's
   latest :data:`SAMPLE` jobs at most, by ranking each function's jobs with window
   functions and keeping the rows at those ranks (nearest-rank percentiles, exact over
   those jobs, in the database: PostgreSQL, SQLite 3.25+, MySQL 8). The bound keeps a
   busy day's cost that of a quiet one: ranking a million jobs took seconds;
3. per function and outcome, the number of jobs of the period.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.db.models import (
    Count,
    DurationField,
    ExpressionWrapper,
    F,
    Q,
    Subquery,
    Value,
    Window,
)
from django.db.models.functions import Ceil, Coalesce, RowNumber, TruncMinute
from django.utils import timezone

from ..models import FINISHED, Job, Status
from ..payload import traceparent_of
from ..web.messages import OFFLOAD_FUNCTION

PERIODS = {"hour": timedelta(hours=1), "day": timedelta(days=1)}
PERCENTILES = (0.5, 0.95, 0.99)
#: Rows in the slowest and most-failing lists.
TOP = 5
#: The percentiles are computed over at most this many of the period's latest jobs.
SAMPLE = 20_000
OUTCOMES = tuple(str(s) for s in FINISHED)


@dataclass(frozen=True)
class Bucket:
    start: datetime
    counts: dict[str, int]

    @property
    def total(self) -> int:
        return sum(self.counts.values())


@dataclass
class FunctionStats:
    function: str
    counts: dict[str, int] = field(default_factory=dict)
    wait: dict[float, float] = field(default_factory=dict)  # percentile -> seconds
    run: dict[float, float] = field(default_factory=dict)
    #: The job at each run-time percentile (its pk): the exemplar behind the figure.
    exemplars: dict[float, Any] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def failures(self) -> int:
        return self.counts.get(Status.FAILED, 0) + self.counts.get(Status.LOST, 0)

    @property
    def failure_rate(self) -> float:
        return self.failures / self.total if self.total else 0.0


@dataclass
class Snapshot:
    period: str
    now: datetime
    since: datetime
    hour: list[Bucket]  # 60 buckets of a minute
    day: list[Bucket]  # 96 buckets of 15 minutes
    functions: list[FunctionStats]

    @property
    def slowest(self) -> list[FunctionStats]:
        timed = [f for f in self.functions if f.run]
        return sorted(timed, key=lambda f: -f.run[0.95])[:TOP]

    @property
    def failing(self) -> list[FunctionStats]:
        failed = [f for f in self.functions if f.failures]
        return sorted(failed, key=lambda f: (-f.failures, -f.failure_rate))[:TOP]


def per_minute(since: datetime) -> dict[tuple[datetime, str], int]:
    """Query 1: finished jobs per (minute, outcome) since ``since``."""
    rows = (
        Job.objects.filter(finished_at__gte=since)
        .annotate(minute=TruncMinute("finished_at"))
        .values_list("minute", "status")
        .annotate(n=Count("pk"))
        .order_by()
    )
    return {(minute, status): n for minute, status, n in rows}


def buckets(
    counts: dict[tuple[datetime, str], int], end: datetime, size: timedelta, number: int
) -> list[Bucket]:
    """``number`` buckets of ``size`` ending with the one that holds ``end``."""
    step = size.total_seconds()
    last = math.floor(end.timestamp() / step) * step
    first = last - (number - 1) * step
    out = [
        Bucket(datetime.fromtimestamp(first + i * step, tz=end.tzinfo), dict.fromkeys(OUTCOMES, 0))
        for i in range(number)
    ]
    for (minute, status), n in counts.items():
        index = int((minute.timestamp() - first) // step)
        if 0 <= index < number and status in out[index].counts:
            out[index].counts[status] += n
    return out


def _seconds(value: Any) -> float:
    if isinstance(value, timedelta):
        return value.total_seconds()
    return float(value) / 1e6  # microseconds, where a backend returns a number


def percentiles(since: datetime) -> dict[str, FunctionStats]:
    """Query 2: p50/p95/p99 of queue wait and run time per function (see :data:`SAMPLE`)."""
    # Where the period's SAMPLE latest jobs start: one step along the finished_at index
    # (an OFFSET, no ranking), inside the same statement.
    sample_start = (
        Job.objects.filter(finished_at__gte=since)
        .order_by("-finished_at")
        .values("finished_at")[SAMPLE - 1 : SAMPLE]
    )
    duration = DurationField()
    ranks = [Ceil(F("total") * p) for p in PERCENTILES]
    wanted = Q()
    for rank in ranks:
        wanted |= Q(wait_rank=rank) | Q(run_rank=rank)
    rows = (
        Job.objects.filter(finished_at__gte=since, started_at__isnull=False)
        .filter(finished_at__gte=Coalesce(Subquery(sample_start), Value(since)))
        .annotate(
            wait=ExpressionWrapper(F("started_at") - F("created_at"), output_field=duration),
            run=ExpressionWrapper(F("finished_at") - F("started_at"), output_field=duration),
            total=Window(Count("pk"), partition_by=[F("function")]),
            wait_rank=Window(RowNumber(), partition_by=[F("function")], order_by=F("wait").asc()),
            run_rank=Window(RowNumber(), partition_by=[F("function")], order_by=F("run").asc()),
        )
        .filter(wanted)
        .values_list("function", "total", "wait_rank", "wait", "run_rank", "run", "pk")
        .order_by()
    )
    stats: dict[str, FunctionStats] = {}
    for function, total, wait_rank, wait, run_rank, run, pk in rows:
        entry = stats.setdefault(function, FunctionStats(function))
        for p in PERCENTILES:
            rank = math.ceil(total * p)
            if wait_rank == rank:
                entry.wait[p] = max(_seconds(wait), 0.0)
            if run_rank == rank:
                entry.run[p] = max(_seconds(run), 0.0)
                entry.exemplars[p] = pk
    return stats


def exemplar_traces(functions: list[FunctionStats], p: float = 0.95) -> dict[str, str]:
    """The trace id of each function's exemplar job at percentile ``p`` (those whose
    submitter was traced): one query, for the few functions listed."""
    pks = [f.exemplars[p] for f in functions if p in f.exemplars]
    if not pks:
        return {}
    found = {}
    for function, arguments in Job.objects.filter(pk__in=pks).values_list("function", "arguments"):
        parent = traceparent_of(arguments, offloaded=function == OFFLOAD_FUNCTION)
        if parent is not None:
            found[function] = parent.split("-")[1]
    return found


def outcomes(since: datetime) -> dict[str, dict[str, int]]:
    """Query 3: jobs per (function, outcome) finished since ``since``."""
    rows = (
        Job.objects.filter(finished_at__gte=since)
        .values_list("function", "status")
        .annotate(n=Count("pk"))
        .order_by()
    )
    out: dict[str, dict[str, int]] = {}
    for function, status, n in rows:
        out.setdefault(function, {})[status] = n
    return out


class MinuteCounts:
    """The day's per-minute counts, kept between refreshes (a live feed's).

    Minutes that have passed do not change, but for jobs committed late: each refresh
    reads again only the last :attr:`MARGIN` and the minutes since the last refresh.
    """

    MARGIN = timedelta(minutes=3)

    def __init__(self) -> None:
        self.counts: dict[tuple[datetime, str], int] = {}
        self.until: datetime | None = None

    def refresh(self, now: datetime) -> dict[tuple[datetime, str], int]:
        start = now - PERIODS["day"]
        if self.until is not None and self.until > start:
            start = self.until
        first = start.replace(second=0, microsecond=0)  # whole minutes only
        fresh = per_minute(first)
        oldest = now - PERIODS["day"] - timedelta(minutes=1)
        self.counts = {k: n for k, n in self.counts.items() if oldest <= k[0] < first} | fresh
        self.until = now - self.MARGIN
        return self.counts


def snapshot(
    period: str = "hour", now: datetime | None = None, minutes: MinuteCounts | None = None
) -> Snapshot:
    """Everything the dashboard shows for ``period`` ("hour" or "day").

    ``minutes`` (a live feed's) saves reading the whole day's counts again.
    """
    if period not in PERIODS:
        raise ValueError(f"period must be one of {', '.join(PERIODS)}, not {period!r}")
    now = now or timezone.now()
    since = now - PERIODS[period]
    day = minutes.refresh(now) if minutes is not None else per_minute(now - PERIODS["day"])
    stats = percentiles(since)
    for function, counts in outcomes(since).items():
        stats.setdefault(function, FunctionStats(function)).counts = counts
    return Snapshot(
        period=period,
        now=now,
        since=since,
        hour=buckets(day, now, timedelta(minutes=1), 60),
        day=buckets(day, now, timedelta(minutes=15), 96),
        functions=sorted(stats.values(), key=lambda f: f.function),
    )
