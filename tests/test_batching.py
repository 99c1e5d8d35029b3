"""The Batcher gathers one event-loop turn's database calls into one hop."""

from __future__ import annotations

import asyncio
import time

import pytest
from django.db import DataError, IntegrityError, connection, transaction

from django_gearattach import asubmit, records
from django_gearattach.batching import Batcher
from django_gearattach.models import Job
from tests.dbthreads import closes_thread_connections  # noqa: F401


async def test_calls_of_one_loop_turn_share_one_batch():
    batches: list[list[int]] = []

    def double(items: list[int]) -> list[int | BaseException]:
        batches.append(items)
        return [i * 2 for i in items]

    batcher: Batcher[int, int] = Batcher(double)
    results = await asyncio.gather(*(batcher(i) for i in range(50)))
    assert results == [i * 2 for i in range(50)]
    assert batches == [list(range(50))]


async def test_calls_made_while_a_batch_runs_wait_and_go_together():
    batches: list[list[int]] = []

    def slow(items: list[int]) -> list[int | BaseException]:
        batches.append(items)
        time.sleep(0.05)
        return list(items)

    batcher: Batcher[int, int] = Batcher(slow)
    first = asyncio.ensure_future(batcher(0))
    await asyncio.sleep(0.01)  # the first batch is now in the database thread
    rest = [asyncio.ensure_future(batcher(i)) for i in range(1, 30)]
    assert await asyncio.gather(first, *rest) == list(range(30))
    assert batches == [[0], list(range(1, 30))]


async def test_an_error_reaches_only_its_own_caller():
    def check(items: list[int]) -> list[int | BaseException]:
        return [ValueError(f"bad {i}") if i % 2 else i for i in items]

    batcher: Batcher[int, int] = Batcher(check)
    results = await asyncio.gather(*(batcher(i) for i in range(4)), return_exceptions=True)
    assert (results[0], results[2]) == (0, 2)
    assert [str(results[1]), str(results[3])] == ["bad 1", "bad 3"]


async def test_a_failing_batch_fails_every_caller_with_its_error():
    def broken(items: list[int]) -> list[int | BaseException]:
        raise RuntimeError("database is down")

    batcher: Batcher[int, int] = Batcher(broken)
    results = await asyncio.gather(*(batcher(i) for i in range(3)), return_exceptions=True)
    assert [str(r) for r in results] == ["database is down"] * 3


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("closes_thread_connections")
async def test_concurrent_asubmits_are_all_recorded_and_sent(gearmand):
    jobs = await asyncio.gather(*(asubmit("tests.add", [i, i]) for i in range(40)))
    assert len({j.key for j in jobs}) == 40
    assert await Job.objects.filter(status="queued").acount() == 40


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("closes_thread_connections")
async def test_concurrent_asubmits_of_one_key_make_one_job(gearmand):
    jobs = await asyncio.gather(*(asubmit("tests.add", [1, 2], key="same") for _ in range(10)))
    assert {j.pk for j in jobs} == {jobs[0].pk}
    assert await Job.objects.acount() == 1


def _jobs(count: int) -> list[Job]:
    return [Job(function="tests.add", key=f"batch-{n}") for n in range(count)]


@pytest.mark.django_db(transaction=True)
def test_a_batch_that_fits_one_insert_runs_without_begin_and_commit(django_assert_num_queries):
    jobs = _jobs(20)
    with django_assert_num_queries(1), records.atomic_unless_one_statement(jobs):
        records.insert(*jobs)
    assert Job.objects.count() == 20


@pytest.mark.django_db(transaction=True)
def test_a_batch_of_several_inserts_is_all_or_nothing():
    # SQLite caps the parameters per statement (how many depends on its build), so one
    # row more than a statement holds needs two; PostgreSQL takes any batch in one.
    many = 100_000
    per_statement = connection.ops.bulk_batch_size(records._INSERT_FIELDS, _jobs(1) * many)
    count = per_statement + 1 if per_statement < many else 300
    Job.objects.create(function="tests.add", key=f"batch-{count - 1}")  # the last row collides
    jobs = _jobs(count)
    with pytest.raises(IntegrityError), records.atomic_unless_one_statement(jobs):
        records.insert(*jobs)
    assert list(Job.objects.values_list("key", flat=True)) == [f"batch-{count - 1}"]


@pytest.mark.django_db(transaction=True)
def test_inside_a_transaction_a_failed_batch_leaves_it_usable():
    Job.objects.create(function="tests.add", key="batch-1")
    with transaction.atomic():
        jobs = _jobs(2)
        with pytest.raises(IntegrityError), records.atomic_unless_one_statement(jobs):
            records.insert(*jobs)
        Job.objects.create(function="tests.add", key="after")  # the outer transaction lives
    assert sorted(Job.objects.values_list("key", flat=True)) == ["after", "batch-1"]


@pytest.mark.django_db(transaction=True)
def test_a_multi_row_insert_stores_every_field_as_the_orm_would(django_user_model):
    """PostgreSQL takes the rows as one array per column; SQLite as a VALUES list."""
    owner = django_user_model.objects.create(username="owner")
    jobs = [
        Job(
            function="tests.add",
            key="fields-1",
            priority="high",
            arguments={"args": [1, {"nested": None}], "kwargs": {"k": [1, 2]}},
            owner=owner,
            session_hash="s" * 64,
            server="127.0.0.1:4730",
        ),
        Job(function="tests.add", key="fields-2", arguments=None, data=None, result=None),
        Job(function="tests.other", key="fields-3", result={"x": "é"}, worker_pid=7),
    ]
    records.insert(*jobs)
    for job in jobs:
        stored = Job.objects.get(pk=job.pk)
        read = records.get(job.function, job.key)  # the plain-SQL read of attach()
        assert read is not None
        assert not read._state.adding
        for field in Job._meta.concrete_fields:
            assert getattr(stored, field.attname) == getattr(job, field.attname), field.name
            assert getattr(read, field.attname) == getattr(stored, field.attname), field.name
            assert type(getattr(read, field.attname)) is type(getattr(stored, field.attname))
    assert not jobs[0]._state.adding
    assert records.get("tests.add", "no-such-key") is None


@pytest.mark.django_db(transaction=True)
def test_a_value_too_long_for_its_column_is_refused_as_the_orm_refuses_it():
    """Never stored cut short: a record under a shortened function name is never found."""
    long_name = "f" * 300  # the column holds 255
    jobs = [Job(function=long_name, key="long-1"), Job(function=long_name, key="long-2")]
    if connection.vendor == "postgresql":
        with pytest.raises(DataError):
            Job.objects.create(function=long_name, key="orm")
        with pytest.raises(DataError):
            records.insert(*jobs)
        assert not Job.objects.exists()
    else:  # SQLite does not enforce a varchar's length: the whole value is kept
        records.insert(*jobs)
        assert set(Job.objects.values_list("function", flat=True)) == {long_name}
