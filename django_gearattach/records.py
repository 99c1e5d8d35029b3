"""The hot-path statements on the job table, as plain SQL.

Each job costs a handful of statements (an INSERT at submit, two UPDATEs in the
worker, which PostgreSQL takes as one statement under load, at most one SELECT in
the attacher). Building them through the ORM cost more CPU than running them, so
the few shapes used per job are written once here, with values prepared by the
model's own fields (so JSON, datetimes and time zones are stored exactly as the ORM
would store them). Their shapes are fixed, so with prepared statements turned on
(docs/deployment.rst) PostgreSQL plans each once per connection.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any

from django.db import connections, router, transaction
from django.db.models import Field

from .models import Job

_cache: dict[tuple[Any, ...], str] = {}
_GetStatement = tuple[str, list[str], list[Any], Any]
_get_cache: dict[tuple[str, tuple[str, ...]], _GetStatement] = {}
_FIELDS: dict[str, Field[Any, Any]] = {f.name: f for f in Job._meta.concrete_fields}


@contextmanager
def _cursor(conn: Any) -> Iterator[Any]:
    """A cursor for one statement, kept on the connection and reused while it lives.

    Creating Django's cursor wrapper cost about as much CPU as running one of these
    statements. While queries are being logged (DEBUG, ``CaptureQueriesContext``,
    ``django_assert_num_queries``) each statement gets a fresh cursor, as the logging
    cursor is chosen when a cursor is made.
    """
    cached = getattr(conn, "_gearattach_cursor", None)
    if cached is not None and conn.connection is cached[0] and not conn.queries_logged:
        yield cached[1]
        return
    cursor = conn.cursor()
    if conn.queries_logged:
        with cursor:
            yield cursor
        return
    conn._gearattach_cursor = (conn.connection, cursor)
    yield cursor


def _table(alias: str) -> tuple[Any, str]:
    conn = connections[alias]
    return conn, conn.ops.quote_name(Job._meta.db_table)


# Fields whose database value is the Python value itself when it is a plain str, int or
# None (no conversion, no adaptation): preparing those through the field cost more CPU
# than the statement. Anything else (datetimes, JSON, enum members) goes through it.
_PLAIN_TYPES = (str, int, type(None))
_PLAIN_FIELDS = frozenset(
    name
    for name, field in _FIELDS.items()
    if field.get_internal_type()
    in {"CharField", "TextField", "PositiveIntegerField", "BigIntegerField", "IntegerField"}
)


def _prep(conn: Any, name: str, value: Any) -> Any:
    if type(value) in _PLAIN_TYPES and name in _PLAIN_FIELDS:
        return value
    return _FIELDS[name].get_db_prep_save(value, connection=conn)


def _row(conn: Any, job: Job) -> list[Any]:
    """The INSERT parameters of one record, in :data:`_INSERT_FIELDS` order."""
    values = []
    for name, attname, field in _INSERT_PLAN:
        value = getattr(job, attname)
        if type(value) in _PLAIN_TYPES and name in _PLAIN_FIELDS:
            values.append(value)
        else:
            values.append(field.get_db_prep_save(value, connection=conn))
    return values


@dataclass(frozen=True, slots=True)
class Update:
    """An UPDATE of the (function, key) row, with optional conditions."""

    function: str
    key: str
    fields: dict[str, Any]
    statuses: tuple[str, ...] = ()
    attempts_below: int | None = None
    increment_attempts: bool = False
    #: Fenced execution: only a record whose claim (``execution``) is this one.
    execution: str | None = None
    #: Fenced execution: only a record that no live claim holds at this time (not
    #: running, or running with a lease that ended before it).
    unclaimed_at: Any = None
    #: Only a record with no run waiting to follow this one (a run's outcome: with a
    #: follow-up or a replacement waiting, the record is handed over instead, see
    #: :mod:`~django_gearattach.runs`).
    no_successor: bool = False


def _update_sql(conn: Any, alias: str, spec: Update) -> tuple[str, list[Any]]:
    shape = (
        alias,
        tuple(spec.fields),
        len(spec.statuses),
        spec.attempts_below is not None,
        spec.increment_attempts,
        spec.execution is not None,
        spec.unclaimed_at is not None,
        spec.no_successor,
    )
    sql = _cache.get(shape)
    if sql is None:
        q = conn.ops.quote_name
        table = q(Job._meta.db_table)
        sets = [f"{q(_FIELDS[n].column)} = %s" for n in spec.fields]
        if spec.increment_attempts:
            sets.append(f"{q('attempts')} = {q('attempts')} + 1")
            # Every start of a run counts one more stream run (django_gearattach.streams).
            sets.append(f"{q('stream_run')} = {q('stream_run')} + 1")
        where = [f"{q('function')} = %s", f"{q('key')} = %s"]
        if spec.statuses:
            where.append(f"{q('status')} IN ({', '.join(['%s'] * len(spec.statuses))})")
        if spec.attempts_below is not None:
            where.append(f"{q('attempts')} < %s")
        if spec.execution is not None:
            where.append(f"{q('execution')} = %s")
        if spec.unclaimed_at is not None:
            lease = q("lease_until")
            where.append(f"({q('status')} <> %s OR {lease} IS NULL OR {lease} < %s)")
        if spec.no_successor:
            where.append(f"{q('next_reason')} = ''")
        sql = _cache[shape] = f"UPDATE {table} SET {', '.join(sets)} WHERE {' AND '.join(where)}"
    params = [_prep(conn, n, v) for n, v in spec.fields.items()]
    params += [spec.function, spec.key, *spec.statuses]
    if spec.attempts_below is not None:
        params.append(spec.attempts_below)
    if spec.execution is not None:
        params.append(spec.execution)
    if spec.unclaimed_at is not None:
        params += ["running", _prep(conn, "lease_until", spec.unclaimed_at)]
    return sql, params


def update(
    function: str,
    key: str,
    fields: dict[str, Any],
    *,
    statuses: Iterable[str] = (),
    attempts_below: int | None = None,
    increment_attempts: bool = False,
    execution: str | None = None,
    no_successor: bool = False,
) -> int:
    """UPDATE the (function, key) row; return how many rows changed (0 or 1)."""
    spec = Update(
        function,
        key,
        fields,
        tuple(statuses),
        attempts_below,
        increment_attempts,
        execution,
        no_successor=no_successor,
    )
    return _execute(router.db_for_write(Job), spec)


def _execute(alias: str, spec: Update) -> int:
    conn = connections[alias]
    sql, params = _update_sql(conn, alias, spec)
    with _cursor(conn) as cursor:
        cursor.execute(sql, params)
        return int(cursor.rowcount)


def combines_updates() -> bool:
    """Whether :func:`update_together` sends one statement (PostgreSQL) for several rows."""
    return connections[router.db_for_write(Job)].vendor == "postgresql"


def update_together(*specs: Update) -> list[int]:
    """Several UPDATEs in one transaction; return each one's row count.

    On PostgreSQL they are one statement (data-modifying WITH clauses), so they cost
    one round trip and one commit; elsewhere they run inside ``transaction.atomic``.
    The rows must be distinct.
    """
    alias = router.db_for_write(Job)
    conn = connections[alias]
    if len(specs) == 1:
        return [_execute(alias, specs[0])]
    if conn.vendor != "postgresql":
        with transaction.atomic(using=alias):
            return [_execute(alias, spec) for spec in specs]
    parts, params = [], []
    for number, spec in enumerate(specs):
        sql, spec_params = _update_sql(conn, alias, spec)
        parts.append(f"u{number} AS ({sql} RETURNING 1)")
        params += spec_params
    counts = ", ".join(f"(SELECT count(*) FROM u{n})" for n in range(len(specs)))
    with _cursor(conn) as cursor:
        cursor.execute(f"WITH {', '.join(parts)} SELECT {counts}", params)
        return [int(count) for count in cursor.fetchone()]


_INSERT_FIELDS = list(_FIELDS.values())
_INSERT_PLAN = [(f.name, f.attname, f) for f in _INSERT_FIELDS]


def atomic_unless_one_statement(jobs: list[Job]) -> AbstractContextManager[Any]:
    """``transaction.atomic`` around :func:`insert`, unless it needs one statement only.

    Inside an outer transaction it is always a savepoint, so an IntegrityError
    leaves that transaction usable.
    """
    alias = router.db_for_write(Job)
    conn = connections[alias]
    single = len(jobs) == 1 or len(jobs) <= conn.ops.bulk_batch_size(_INSERT_FIELDS, jobs)
    if single and not conn.in_atomic_block:
        return nullcontext()
    return transaction.atomic(using=alias)


def insert(*jobs: Job) -> None:
    """INSERT new records in as few statements as the database allows.

    Raises IntegrityError when a (function, key) exists; wrap several jobs in
    ``transaction.atomic`` to make that all or nothing.
    """
    alias = router.db_for_write(Job)
    conn, table = _table(alias)
    columns = _cache.get(("columns", alias))
    if columns is None:
        columns = _cache["columns", alias] = ", ".join(
            conn.ops.quote_name(f.column) for f in _INSERT_FIELDS
        )
    if conn.vendor == "postgresql" and len(jobs) > 1:
        statements = [_array_insert(conn, alias, table, columns, jobs)]
    else:
        statements = _values_inserts(conn, alias, table, columns, jobs)
    with _cursor(conn) as cursor:
        for sql, params in statements:
            cursor.execute(sql, params)
    for job in jobs:
        job._state.adding = False
        job._state.db = alias
        mark_read(job)


def _values_inserts(
    conn: Any, alias: str, table: str, columns: str, jobs: Sequence[Job]
) -> list[tuple[str, list[Any]]]:
    """``INSERT ... VALUES`` statements, as many rows in each as the database allows."""
    size = max(1, conn.ops.bulk_batch_size(_INSERT_FIELDS, jobs)) if len(jobs) > 1 else 1
    row = f"({', '.join(['%s'] * len(_INSERT_FIELDS))})"
    statements = []
    for start in range(0, len(jobs), size):
        chunk = jobs[start : start + size]
        sql = _cache.get(("insert", alias, len(chunk)))
        if sql is None:
            values = ", ".join([row] * len(chunk))
            sql = _cache["insert", alias, len(chunk)] = (
                f"INSERT INTO {table} ({columns}) VALUES {values}"
            )
        params = [value for job in chunk for value in _row(conn, job)]
        statements.append((sql, params))
    return statements


def _array_insert(
    conn: Any, alias: str, table: str, columns: str, jobs: Sequence[Job]
) -> tuple[str, list[Any]]:
    """PostgreSQL: many rows in one statement of fixed shape, one array per column.

    A ``VALUES`` list has a parameter per row and column, and psycopg re-parses
    statements with more than 50 parameters on every call, which cost more than the
    INSERT itself; this statement has one parameter per column whatever the batch.
    """
    sql = _cache.get(("insert-arrays", alias))
    if sql is None:
        # varchar[] rather than varchar(255)[]: a cast to varchar(n) would cut a long value
        # short where the column itself refuses it (as Django's own UNNEST insert does).
        types = [str(f.db_type(conn)).split("(")[0] for f in _INSERT_FIELDS]
        arrays = ", ".join(f"%s::{db_type}[]" for db_type in types)
        sql = _cache["insert-arrays", alias] = (
            f"INSERT INTO {table} ({columns}) SELECT * FROM unnest({arrays})"
        )
    rows = [_row(conn, job) for job in jobs]
    params = [[row[column] for row in rows] for column in range(len(_INSERT_FIELDS))]
    return sql, params


def drop_broken_connections() -> None:
    """Close this thread's database connections that an error left unusable.

    Long-lived threads (a worker, the hub's) keep their connections across jobs
    (reconnecting each time, as ``CONN_MAX_AGE=0`` would, costs more than a no-op job);
    only a broken one is dropped, so the next query reconnects.
    """
    for conn in connections.all(initialized_only=True):
        if conn.connection is not None and conn.errors_occurred:
            conn.errors_occurred = False
            if not conn.is_usable():
                conn.close()


_SENTINELS = ("\0function", "\0key")


def _get_statement(alias: str, fields: tuple[str, ...]) -> _GetStatement:
    """The SELECT of one record by (function, key), compiled once by the ORM itself.

    Running the ORM's own SQL with its own converters keeps every value exactly as a
    queryset would return it; compiling it again for each read cost more CPU than the
    query.
    """
    cached = _get_cache.get((alias, fields))
    if cached is None:
        query = Job.objects.using(alias).filter(function=_SENTINELS[0], key=_SENTINELS[1])
        if fields:
            query = query.only(*fields)
        compiler = query.order_by()[:1].query.get_compiler(using=alias)
        sql, params = compiler.as_sql()
        if tuple(params) != _SENTINELS:  # the ORM changed shape: say so, never misbind
            raise RuntimeError(f"unexpected parameters {params!r} for the record query")
        columns = [col for col, _, _ in compiler.select]
        names = [col.target.attname for col in columns]
        converters = compiler.get_converters(columns)
        cached = _get_cache[alias, fields] = (sql, names, converters, compiler)
    return cached


def get(function: str, key: str, fields: tuple[str, ...] = ()) -> Job | None:
    """The (function, key) record, or None: ``Job.objects.for_key(...).first()``, cheaper.

    ``fields`` (as for ``.only()``) loads those columns only; the others are deferred.
    """
    alias = router.db_for_read(Job)
    sql, names, converters, compiler = _get_statement(alias, fields)
    with _cursor(connections[alias]) as cursor:
        cursor.execute(sql, [function, key])
        row = cursor.fetchone()
    if row is None:
        return None
    if converters:
        row = next(iter(compiler.apply_converters([row], converters)))
    return mark_read(Job.from_db(alias, names, list(row)))


def mark_read(job: Job) -> Job:
    """Note that ``job`` matches the database as of now (see :func:`read_within`)."""
    job._gearattach_read_at = time.monotonic()  # type: ignore[attr-defined]
    return job


def read_within(job: Job, seconds: float) -> bool:
    """Whether ``job`` was read or written by this module less than ``seconds`` ago."""
    read_at: float | None = getattr(job, "_gearattach_read_at", None)
    return read_at is not None and time.monotonic() - read_at < seconds


def load(targets: list[tuple[str, str]]) -> list[Job | None]:
    """The records of several (function, key) pairs, one query per function."""
    by_function: dict[str, list[str]] = {}
    for function, key in targets:
        by_function.setdefault(function, []).append(key)
    found: dict[tuple[str, str], Job] = {}
    for function, keys in by_function.items():
        for job in Job.objects.filter(function=function, key__in=keys).order_by():
            found[job.function, job.key] = mark_read(job)
    return [found.get(target) for target in targets]


def attempts(function: str, key: str) -> int | None:
    """The record's ``attempts`` (the starts of its current run), or None: one column
    of one row, for the span of a traced run (tracing/run.py)."""
    alias = router.db_for_read(Job)
    conn, table = _table(alias)
    sql = _cache.get(("attempts", alias))
    if sql is None:
        q = conn.ops.quote_name
        sql = _cache["attempts", alias] = (
            f"SELECT {q('attempts')} FROM {table} WHERE {q('function')} = %s AND {q('key')} = %s"
        )
    with _cursor(conn) as cursor:
        cursor.execute(sql, [function, key])
        row = cursor.fetchone()
    return None if row is None else int(row[0])
