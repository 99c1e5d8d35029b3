"""The hot-path statements on the job table, as plain SQL.

Each job costs a handful of statements (an INSERT at submit, two UPDATEs in the
worker, at most one SELECT in the attacher). Building them through the ORM cost
more CPU than running them, so the few shapes used per job are written once here,
with values prepared by the model's own fields (so JSON, datetimes and time zones
are stored exactly as the ORM would store them).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.db import connections, router
from django.db.models import Field

from .models import Job

_cache: dict[tuple[Any, ...], str] = {}
_FIELDS: dict[str, Field[Any, Any]] = {f.name: f for f in Job._meta.concrete_fields}


def _table(alias: str) -> tuple[Any, str]:
    conn = connections[alias]
    return conn, conn.ops.quote_name(Job._meta.db_table)


def _prep(conn: Any, name: str, value: Any) -> Any:
    return _FIELDS[name].get_db_prep_save(value, connection=conn)


def update(
    function: str,
    key: str,
    fields: dict[str, Any],
    *,
    statuses: Iterable[str] = (),
    attempts_below: int | None = None,
    increment_attempts: bool = False,
) -> int:
    """UPDATE the (function, key) row; return how many rows changed (0 or 1)."""
    alias = router.db_for_write(Job)
    conn, table = _table(alias)
    statuses = tuple(statuses)
    shape = (alias, tuple(fields), len(statuses), attempts_below is not None, increment_attempts)
    sql = _cache.get(shape)
    q = conn.ops.quote_name
    if sql is None:
        sets = [f"{q(_FIELDS[n].column)} = %s" for n in fields]
        if increment_attempts:
            sets.append(f"{q('attempts')} = {q('attempts')} + 1")
        where = [f"{q('function')} = %s", f"{q('key')} = %s"]
        if statuses:
            where.append(f"{q('status')} IN ({', '.join(['%s'] * len(statuses))})")
        if attempts_below is not None:
            where.append(f"{q('attempts')} < %s")
        sql = _cache[shape] = f"UPDATE {table} SET {', '.join(sets)} WHERE {' AND '.join(where)}"
    params = [_prep(conn, n, v) for n, v in fields.items()]
    params += [function, key, *statuses]
    if attempts_below is not None:
        params.append(attempts_below)
    with conn.cursor() as cursor:
        cursor.execute(sql, params)
        return int(cursor.rowcount)


_INSERT_FIELDS = list(_FIELDS.values())


def insert(*jobs: Job) -> None:
    """INSERT new records in as few statements as the database allows.

    Raises IntegrityError when a (function, key) exists; wrap several jobs in
    ``transaction.atomic`` to make that all or nothing.
    """
    alias = router.db_for_write(Job)
    conn, table = _table(alias)
    size = max(1, conn.ops.bulk_batch_size(_INSERT_FIELDS, jobs))
    q = conn.ops.quote_name
    row = f"({', '.join(['%s'] * len(_INSERT_FIELDS))})"
    columns = ", ".join(q(f.column) for f in _INSERT_FIELDS)
    with conn.cursor() as cursor:
        for start in range(0, len(jobs), size):
            chunk = jobs[start : start + size]
            sql = _cache.get(("insert", alias, len(chunk)))
            if sql is None:
                values = ", ".join([row] * len(chunk))
                sql = _cache["insert", alias, len(chunk)] = (
                    f"INSERT INTO {table} ({columns}) VALUES {values}"
                )
            params = [
                f.get_db_prep_save(getattr(job, f.attname), connection=conn)
                for job in chunk
                for f in _INSERT_FIELDS
            ]
            cursor.execute(sql, params)
    for job in jobs:
        job._state.adding = False
        job._state.db = alias


def load(targets: list[tuple[str, str]]) -> list[Job | None]:
    """The records of several (function, key) pairs, one query per function."""
    by_function: dict[str, list[str]] = {}
    for function, key in targets:
        by_function.setdefault(function, []).append(key)
    found: dict[tuple[str, str], Job] = {}
    for function, keys in by_function.items():
        for job in Job.objects.filter(function=function, key__in=keys).order_by():
            found[job.function, job.key] = job
    return [found.get(target) for target in targets]
