"""``submit``: keys, priorities, re-runs and a server that is not there."""

from __future__ import annotations

import pytest
from django.db import transaction

from django_gearattach import InvalidKey, SubmitFailed, attach, submit, task
from django_gearattach.clients import get_client
from django_gearattach.gearman.rendezvous import Address
from django_gearattach.models import Job, Status
from django_gearattach.testing import free_port
from tests.conftest import executions
from tests.helpers import wait_for_status
from tests.testapp.tasks import add

pytestmark = pytest.mark.django_db(transaction=True)


def test_random_keys_are_128_bits_and_distinct(gearmand):
    keys = {submit("tests.add", [1, 2]).key for _ in range(20)}
    assert len(keys) == 20
    assert all(len(bytes.fromhex(k)) == 16 for k in keys)


def test_the_record_holds_what_was_submitted(gearmand):
    job = add.submit(2, b=3)
    record = Job.objects.get(pk=job.pk)
    assert record.function == "tests.add"
    assert record.arguments == {"args": [2], "kwargs": {"b": 3}}
    assert record.status == Status.QUEUED
    assert record.server == gearmand.address
    assert record.handle == ""  # the worker records the handle when the job starts
    assert get_client().status_unique(Address.parse(gearmand.address), job.key.encode()).known


def test_the_worker_records_the_handle_and_where_it_ran(gearmand, worker):
    job = add.submit(2, 3)
    record = wait_for_status("tests.add", job.key, Status.COMPLETE)
    assert record.handle.startswith("H:")
    assert (record.result, record.attempts, record.worker_pid) == (5, 1, worker.pid)


def test_inside_a_transaction_gearmand_gets_the_job_on_commit(gearmand):
    address = Address.parse(gearmand.address)
    with transaction.atomic():
        job = submit("tests.add", [1, 2])
        assert not get_client().status_unique(address, job.key.encode()).known
    assert get_client().status_unique(address, job.key.encode()).known


def test_a_rolled_back_submit_sends_nothing(gearmand):
    address = Address.parse(gearmand.address)
    submitted = []

    def submit_then_fail() -> None:
        with transaction.atomic():
            submitted.append(submit("tests.add", [1, 2]))
            raise RuntimeError("roll back")

    with pytest.raises(RuntimeError):
        submit_then_fail()
    assert not Job.objects.exists()
    assert not get_client().status_unique(address, submitted[0].key.encode()).known


@pytest.mark.parametrize(
    ("key", "message"),
    [
        ("x" * 64, "at most 63 bytes"),
        ("é" * 32, "at most 63 bytes"),
        ("a\0b", "NUL"),
        ("", "empty"),
        ("-", "hash the payload"),
    ],
)
def test_bad_keys_are_refused_before_anything_is_sent(gearmand, key, message):
    with pytest.raises(InvalidKey, match=message):
        submit("tests.add", [1, 2], key=key)
    assert not Job.objects.exists()


def test_a_63_byte_key_is_accepted(gearmand):
    assert submit("tests.add", [1, 2], key="k" * 63).key == "k" * 63


def test_a_second_submit_of_an_active_key_attaches_instead_of_duplicating(gearmand):
    first = submit("tests.add", [1, 2], key="report-7")
    second = submit("tests.add", [9, 9], key="report-7")
    assert second.pk == first.pk
    assert second.arguments == {"args": [1, 2], "kwargs": {}}
    assert Job.objects.count() == 1


def test_a_finished_key_reuses_its_outcome_unless_rerun_is_asked(gearmand, worker, log_path):
    submit("tests.record", [str(log_path)], key="k1")
    first = list(attach("tests.record", "k1", timeout=20))[-1]
    again = submit("tests.record", [str(log_path)], key="k1")
    assert again.status == Status.COMPLETE
    assert again.result == first.result
    assert len(executions(log_path)) == 1
    rerun = submit("tests.record", [str(log_path)], key="k1", rerun=True)
    assert rerun.status == Status.QUEUED
    second = list(attach("tests.record", "k1", timeout=20))[-1]
    assert second.result != first.result
    assert len(executions(log_path)) == 2
    assert Job.objects.get(key="k1").attempts == 1


def test_high_priority_jobs_run_before_queued_low_ones(gearmand, worker_factory):
    low = [submit("tests.add", [i, 0], priority="low") for i in range(3)]
    high = submit("tests.add", [9, 9], priority="high")
    worker_factory([gearmand])
    for job in [*low, high]:
        wait_for_status("tests.add", job.key, Status.COMPLETE)
    order = list(Job.objects.order_by("started_at").values_list("key", flat=True))
    assert order[0] == high.key


def test_a_task_can_carry_its_own_priority(gearmand):
    @task(name="tests.urgent", priority="high")
    def urgent():
        return 1

    assert urgent.submit().priority == "high"


def test_no_reachable_server_fails_clearly_and_keeps_a_failed_record(settings):
    settings.GEARATTACH = {**settings.GEARATTACH, "SERVERS": [f"127.0.0.1:{free_port()}"]}
    with pytest.raises(SubmitFailed, match="is gearmand running"):
        submit("tests.add", [1, 2], key="lost-1")
    record = Job.objects.get(key="lost-1")
    assert record.status == Status.FAILED
    assert "cannot connect" in record.error


def test_arguments_that_are_not_json_are_refused(gearmand):
    from django_gearattach import BadPayload

    with pytest.raises(BadPayload, match="not JSON serialisable"):
        submit("tests.add", [object()])
    assert not Job.objects.exists()


def test_submitting_by_task_name_or_object_is_the_same(gearmand):
    assert submit(add, [1, 2]).function == submit("tests.add", [1, 2]).function == "tests.add"
