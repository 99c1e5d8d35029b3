"""Queries that keep the admin's job list fast on tables of millions of rows.

Django's defaults scan the whole table on every page load for three things: the
choices of a field's list filter (``SELECT DISTINCT``), the date hierarchy's years or
months (``SELECT DISTINCT date_trunc(...)``), and a search across a join. Here:

* filter choices come from a "loose index scan", one index probe per distinct value
  (a recursive CTE, which PostgreSQL, SQLite and MySQL 8 all run);
* the date hierarchy offers every year, month or day between the first and the
  last job of the current selection (two index probes), including empty ones;
* search compares an exact key, a function name prefix (against the distinct
  function names) and an owner's username (through the owner index), without a join.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.contrib import admin
from django.contrib.auth import get_user_model
from django.db import connections, router
from django.db.models import Field, Max, Min, Q, QuerySet
from django.http import HttpRequest
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from .models import Job, JobQuerySet, Status

MAX_CHOICES = 500


def distinct_values(column: str, limit: int = MAX_CHOICES) -> list[str]:
    """The distinct non-empty values of a Job column that leads an index, in order."""
    alias = router.db_for_read(Job)
    conn = connections[alias]
    q = conn.ops.quote_name
    field = Job._meta.get_field(column)
    assert isinstance(field, Field)
    assert field.column
    table, col = q(Job._meta.db_table), q(field.column)
    sql = (
        f"WITH RECURSIVE t(v, n) AS ("
        f" SELECT MIN({col}), 1 FROM {table}"
        f" UNION ALL"
        f" SELECT (SELECT MIN({col}) FROM {table} WHERE {col} > t.v), t.n + 1"
        f" FROM t WHERE t.v IS NOT NULL AND t.n < %s"
        f") SELECT v FROM t WHERE v IS NOT NULL AND v <> ''"
    )
    with conn.cursor() as cursor:
        cursor.execute(sql, [limit])
        return [row[0] for row in cursor.fetchall()]


class DistinctValueFilter(admin.SimpleListFilter):
    """A list filter on an indexed column whose choices cost one probe per value."""

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [(value, value) for value in distinct_values(str(self.parameter_name))]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self.value()
        if value is None:
            return queryset
        return queryset.filter(**{str(self.parameter_name): value})


class FunctionFilter(DistinctValueFilter):
    title = _("function")
    parameter_name = "function"


class ScheduledFilter(admin.SimpleListFilter):
    """Jobs submitted with ``run_at``/``delay``: waiting for their time, due, or any."""

    title = _("scheduled")
    parameter_name = "scheduled"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, Any]]:
        return [
            ("waiting", _("Waiting for their time")),
            ("due", _("Due, not started")),
            ("any", _("Scheduled at submit")),
        ]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        now = timezone.now()
        value = self.value()
        if value == "waiting":
            return queryset.filter(status=Status.SCHEDULED, scheduled_for__gt=now)
        if value == "due":
            return queryset.filter(status=Status.SCHEDULED, scheduled_for__lte=now)
        if value == "any":
            return queryset.filter(scheduled_for__isnull=False)
        return queryset


class ServerFilter(DistinctValueFilter):
    title = _("server")
    parameter_name = "server"


def _buckets(first: datetime, last: datetime, kind: str) -> list[datetime]:
    """Local-time year, month or day starts from ``first`` to ``last``, as naive datetimes."""
    start, end = timezone.localtime(first).date(), timezone.localtime(last).date()
    out = []
    if kind == "year":
        out = [datetime(year, 1, 1) for year in range(start.year, end.year + 1)]
    elif kind == "month":
        year, month = start.year, start.month
        while (year, month) <= (end.year, end.month):
            out.append(datetime(year, month, 1))
            year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    else:
        day = start
        while day <= end:
            out.append(datetime(day.year, day.month, day.day))
            day += timedelta(days=1)
    return out


class AdminJobQuerySet(JobQuerySet):
    """The admin list's queryset: date hierarchy choices from the first and last job."""

    def datetimes(  # type: ignore[override]
        self, field_name: str, kind: str, order: str = "ASC", tzinfo: Any = None
    ) -> list[datetime]:
        if field_name != "created_at" or kind not in ("year", "month", "day"):
            return list(super().datetimes(field_name, kind, order, tzinfo))  # type: ignore[arg-type]
        bounds = self.order_by().aggregate(first=Min(field_name), last=Max(field_name))
        if bounds["first"] is None:
            return []
        buckets = _buckets(bounds["first"], bounds["last"], kind)
        return buckets if order == "ASC" else buckets[::-1]


def admin_queryset(queryset: JobQuerySet) -> AdminJobQuerySet:
    return AdminJobQuerySet(model=queryset.model, query=queryset.query, using=queryset.db)


def search(queryset: QuerySet[Job], term: str) -> QuerySet[Job]:
    """Jobs whose key is ``term``, whose function starts with it, or whose owner it names."""
    term = term.strip()
    if not term:
        return queryset
    functions = [f for f in distinct_values("function") if f.startswith(term)]
    owners = get_user_model()._default_manager.filter(**{get_user_model().USERNAME_FIELD: term})
    return queryset.filter(
        Q(key=term) | Q(function__in=functions) | Q(owner__in=owners.values("pk"))
    )
