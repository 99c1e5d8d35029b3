"""The Django Tasks backend: django.tasks on Django 6, the django-tasks backport on 5.2."""

from __future__ import annotations

import importlib
import sys
from typing import Any

import django
import pytest

from django_gearattach.integrations.tasks_backend import GearmanBackend
from django_gearattach.integrations.tasks_compat import (
    SOURCE,
    InvalidTask,
    TaskResultDoesNotExist,
    TaskResultMismatch,
    TaskResultStatus,
    default_task_backend,
    task_backends,
    task_enqueued,
    task_finished,
    task_started,
)
from django_gearattach.models import Job, Status
from tests.dbthreads import closes_thread_connections  # noqa: F401
from tests.helpers import wait_until
from tests.tasksapp import tasks as dtasks

needs_django52 = pytest.mark.skipif(
    django.VERSION >= (6, 0),
    reason=f"checks the backport on Django 5.2; this leg runs Django {django.get_version()}",
)


@needs_django52
def test_on_django_52_without_the_backport_the_module_says_what_to_install(monkeypatch):
    for name in (
        "django_gearattach.tasks_backend",
        "django_gearattach.integrations.tasks_backend",
        "django_gearattach.integrations.tasks_compat",
    ):
        monkeypatch.delitem(sys.modules, name, raising=False)
    monkeypatch.setitem(sys.modules, "django_tasks", None)  # as if not installed
    with pytest.raises(ImportError) as caught:
        importlib.import_module("django_gearattach.tasks_backend")
    message = str(caught.value)
    assert f"this is Django {django.get_version()}" in message
    assert "pip install django-tasks" in message
    assert "django_gearattach's own @task and submit()" in message


def test_the_framework_is_djangos_own_on_6_and_the_backport_on_52():
    expected = "django.tasks" if django.VERSION >= (6, 0) else "django_tasks"
    assert expected == SOURCE
    assert type(dtasks.add).__module__.startswith(expected)


pytestmark = pytest.mark.django_db(transaction=True)


def finished(result_id: str, timeout: float = 20.0):
    def check():
        result = default_task_backend.get_result(result_id)
        return result if result.is_finished else None

    return wait_until(check, timeout, f"task result {result_id} to finish")


def test_the_backend_and_its_capabilities():
    backend = task_backends["default"]
    assert isinstance(backend, GearmanBackend)
    assert backend.supports_get_result
    assert backend.supports_priority
    assert backend.supports_async_task
    assert backend.supports_defer


def test_run_after_schedules_the_job(gearmand, worker):
    from datetime import datetime, timedelta

    from django.utils import timezone

    with pytest.raises(InvalidTask, match="aware"):
        dtasks.add.using(run_after=datetime(2030, 1, 1)).enqueue(1, 2)
    run_after = timezone.now() + timedelta(seconds=1)
    result = dtasks.add.using(run_after=run_after).enqueue(2, 2)
    assert result.status == TaskResultStatus.READY
    record = Job.objects.get(key=result.id)
    assert (record.status, record.scheduled_for) == (Status.SCHEDULED, run_after)
    done = finished(result.id)
    assert done.return_value == 4
    assert done.started_at >= run_after.replace(microsecond=0)


def test_gearworker_runs_an_enqueued_task(gearmand, worker):
    result = dtasks.add.enqueue(2, 3)
    assert result.status == TaskResultStatus.READY
    assert (result.args, result.kwargs) == ([2, 3], {})
    record = Job.objects.get(key=result.id)
    assert record.function == "tests.tasksapp.tasks.add"
    done = finished(result.id)
    assert done.status == TaskResultStatus.SUCCESSFUL
    assert done.return_value == 5
    assert done.enqueued_at <= done.started_at <= done.finished_at
    assert done.last_attempted_at == done.started_at
    record.refresh_from_db()
    assert done.worker_ids == [f"{record.worker_host}:{worker.pid}"]
    assert done.attempts == 1
    assert done.errors == []
    result.refresh()  # reloads the fields in place
    assert result.status == TaskResultStatus.SUCCESSFUL  # type: ignore[comparison-overlap]
    assert result.return_value == 5


def test_a_failure_carries_the_exception_class_and_traceback(gearmand, worker):
    result = dtasks.charge.enqueue(12)
    done = finished(result.id)
    assert done.status == TaskResultStatus.FAILED
    [error] = done.errors
    assert error.exception_class is dtasks.BillingError
    assert "card declined for 12" in error.traceback
    with pytest.raises(ValueError, match="Task failed"):
        _ = done.return_value


def test_a_nested_exception_class_comes_from_the_record_not_the_traceback(gearmand, worker):
    done = finished(dtasks.book.enqueue("rent").id)
    [error] = done.errors
    # (Django's exception_class imports the path with import_string: module.Class only.)
    assert error.exception_class_path == "tests.tasksapp.tasks.Ledger.Locked"
    record = Job.objects.get(key=done.id)
    assert (record.exception_module, record.exception_qualname) == (
        "tests.tasksapp.tasks",
        "Ledger.Locked",
    )


def test_time_limits_come_from_the_backend_options(gearmand, worker):
    result = dtasks.oversleep.enqueue()
    done = finished(result.id)
    assert done.status == TaskResultStatus.FAILED
    [error] = done.errors
    assert error.exception_class.__name__ == "SoftTimeLimitExceeded"
    assert "soft time limit (0.5s) exceeded" in error.traceback


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"TIME_LIMITS": ["x"]}, "must map task module paths"),
        ({"TIME_LIMITS": {"m.t": {"hard": 5}}}, r"unknown option\(s\) hard"),
    ],
)
def test_bad_time_limit_options_are_refused(options, message):
    from django.core.exceptions import ImproperlyConfigured

    backend = GearmanBackend("limited", {"OPTIONS": options})
    with pytest.raises(ImproperlyConfigured, match=message):
        backend.time_limits("m.t")


def test_context_async_tasks_and_priorities(gearmand, worker):
    with_context = dtasks.with_context.enqueue()
    doubled = dtasks.async_double.enqueue(21)
    urgent = dtasks.urgent.enqueue("now")
    low = dtasks.add.using(priority=-5).enqueue(1, 1)
    assert finished(with_context.id).return_value == {"id": with_context.id, "attempt": 1}
    assert finished(doubled.id).return_value == 42
    assert finished(urgent.id).return_value == {"urgent": "now"}
    assert finished(low.id).return_value == 2
    priorities = dict(Job.objects.values_list("key", "priority"))
    assert priorities[urgent.id] == "high"
    assert priorities[low.id] == "low"
    assert priorities[doubled.id] == "normal"


def test_async_task_functions_run_natively_on_the_workers_event_loop(gearmand, worker):
    results = [dtasks.async_nap.enqueue(1.0) for _ in range(10)]
    values = [finished(r.id, 30).return_value for r in results]
    # On the asyncio runner's loop (not a thread of async_to_sync's), all at once.
    assert {v["thread"] for v in values} == {"gearattach-async"}
    assert max(v["start"] for v in values) < min(v["end"] for v in values)
    assert {finished(r.id).status for r in results} == {TaskResultStatus.SUCCESSFUL}


def test_unknown_and_foreign_ids_do_not_exist(gearmand):
    backend = task_backends["default"]
    with pytest.raises(TaskResultDoesNotExist):
        backend.get_result("no-such-id")
    from django_gearattach import submit

    job = submit("tests.add", [1, 2])  # one of our own @task jobs, not a Django task
    with pytest.raises(TaskResultDoesNotExist):
        backend.get_result(job.key)
    result = dtasks.urgent.enqueue("x")
    with pytest.raises(TaskResultMismatch):
        dtasks.add.get_result(result.id)


@pytest.mark.usefixtures("closes_thread_connections")
async def test_aenqueue_and_aget_result(gearmand, worker):
    result = await dtasks.add.aenqueue(20, 22)
    assert result.status == TaskResultStatus.READY
    with pytest.raises(TaskResultDoesNotExist):
        await default_task_backend.aget_result("missing")

    async def done():
        fetched = await dtasks.add.aget_result(result.id)
        return fetched if fetched.is_finished else None

    import asyncio

    for _ in range(400):
        fetched = await done()
        if fetched:
            break
        await asyncio.sleep(0.05)
    assert fetched.return_value == 42


@pytest.fixture
def signals_seen():
    seen: list[tuple[str, str, Any]] = []

    def receiver(name):
        def receive(sender, task_result, **kwargs):
            assert sender is GearmanBackend
            seen.append((name, task_result.status, task_result.id))

        return receive

    receivers = {
        task_enqueued: receiver("enqueued"),
        task_started: receiver("started"),
        task_finished: receiver("finished"),
    }
    for signal, handler in receivers.items():
        signal.connect(handler)
    yield seen
    for signal, handler in receivers.items():
        signal.disconnect(handler)


def test_signals_in_immediate_mode(settings, signals_seen):
    settings.GEARATTACH = {**settings.GEARATTACH, "IMMEDIATE": True}
    result = dtasks.add.enqueue(1, 2)
    assert result.status == TaskResultStatus.SUCCESSFUL
    assert result.return_value == 3
    assert signals_seen == [
        ("enqueued", TaskResultStatus.READY, result.id),
        ("started", TaskResultStatus.RUNNING, result.id),
        ("finished", TaskResultStatus.SUCCESSFUL, result.id),
    ]
    failed = dtasks.charge.enqueue(5)
    assert failed.status == TaskResultStatus.FAILED
    assert signals_seen[-1] == ("finished", TaskResultStatus.FAILED, failed.id)
    assert Job.objects.get(key=failed.id).status == Status.FAILED


def test_signals_from_a_real_worker(gearmand, signals_seen):
    from tests.test_signals import thread_worker

    with thread_worker(dtasks.add.module_path):
        result = dtasks.add.enqueue(4, 4)
        finished(result.id)
    # task_enqueued is sent once gearmand accepted the job, which may be after the worker
    # thread started it; the worker's own two signals are in order.
    assert ("enqueued", TaskResultStatus.READY, result.id) in signals_seen
    assert [s for s in signals_seen if s[0] != "enqueued"] == [
        ("started", TaskResultStatus.RUNNING, result.id),
        ("finished", TaskResultStatus.SUCCESSFUL, result.id),
    ]
