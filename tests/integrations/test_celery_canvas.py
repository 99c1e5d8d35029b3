"""Retries, delays, canvas, results and signals of the Celery shim, through a real worker.

Written as Celery users write such tests; with Celery the imports would be
``from celery import chain, chord, group`` and ``from celery.result import ...``.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from datetime import timedelta
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth.models import User
from django.db import transaction
from django.utils import timezone

from django_gearattach import aattach
from django_gearattach.celery import chain, chord, group, signals, states
from django_gearattach.celery.exceptions import Retry, TimeoutError
from django_gearattach.celery.result import AsyncResult, GroupResult
from django_gearattach.conf import conf
from django_gearattach.models import Job, Status
from tests.celeryapp.tasks import (
    Inventory,
    add,
    auto_flaky,
    empty_shelf,
    fire_and_forget,
    flaky,
    missing_user,
    mul,
    process_rows,
    wait_then_report,
    xsum,
)
from tests.dbthreads import closes_thread_connections  # noqa: F401
from tests.helpers import AttachThread, foreground_clients, wait_for_status, wait_until

pytestmark = pytest.mark.django_db(transaction=True)


def test_self_retry_runs_again_under_the_same_id(celery_worker, tmp_path):
    result = flaky.delay(str(tmp_path / "log"), 2)
    assert result.get(timeout=30) == {"attempt": 3, "retries": 2}
    record = Job.objects.get(key=result.id)
    assert (record.retries, record.attempts, record.status) == (2, 1, Status.COMPLETE)
    assert Job.objects.count() == 1


def test_retries_stop_at_max_retries_and_raise_the_task_exception(celery_worker, tmp_path):
    result = flaky.delay(str(tmp_path / "log"), 10)
    with pytest.raises(ConnectionError, match="attempt 4 failed"):
        result.get(timeout=30)
    assert result.state == states.FAILURE
    assert result.retries == 3


def test_a_retry_waits_in_the_record_as_retry(celery_worker, tmp_path):
    result = flaky.delay(str(tmp_path / "log"), 1)
    # The retry's countdown (0.5 s, rounded up to gearmand's whole seconds) is the window.
    wait_until(lambda: Job.objects.get(key=result.id).retries == 1)
    assert result.state == states.RETRY
    assert isinstance(result.info, Retry)
    assert "retry 1 after ConnectionError: attempt 1 failed" in str(result.info)
    record = Job.objects.get(key=result.id)
    assert record.status == Status.SCHEDULED
    assert record.arguments["kwargs"]["__celery__"] == {"retries": 1}
    assert result.get(timeout=10)["attempt"] == 2


@pytest.mark.usefixtures("closes_thread_connections")
async def test_attachers_follow_a_task_through_its_retry(celery_worker, tmp_path):
    """Joined to the running job when it retries, attach and aattach keep following."""
    gate = tmp_path / "gate"
    result = await sync_to_async(flaky.delay)(str(tmp_path / "log"), 1, str(gate))
    await sync_to_async(wait_for_status)(flaky.name, result.id, Status.RUNNING)
    follower = AttachThread(flaky.name, result.id)
    follower.start()

    async def follow() -> list[dict[str, Any]]:
        return [e.as_dict() async for e in aattach(flaky.name, result.id, timeout=30)]

    following = asyncio.create_task(follow())
    server = str(conf.SERVERS[0])
    while foreground_clients(server, result.id) < 2:  # both have joined the running job
        await asyncio.sleep(0.02)
    gate.touch()
    expected = {"event": "complete", "result": {"attempt": 2, "retries": 1}}

    def outcomes(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [e for e in events if e["event"] != "started"]  # the retry's run starting

    # The retry's WORK_FAIL was no failure for them: they heard the second run end.
    assert outcomes(await following) == [expected]
    assert outcomes([e.as_dict() for e in await sync_to_async(follower.result)()]) == [expected]


def test_autoretry_for_with_backoff(celery_worker, tmp_path):
    result = auto_flaky.delay(str(tmp_path / "log"), 2)
    assert result.get(timeout=30) == 3
    assert Job.objects.get(key=result.id).retries == 2


def test_countdown_and_eta_schedule_the_job(celery_worker):
    soon = add.apply_async((1, 2), countdown=1)
    record = Job.objects.get(key=soon.id)
    assert record.status == Status.SCHEDULED
    assert soon.state == states.PENDING
    later = add.apply_async((2, 3), eta=timezone.now() + timedelta(seconds=1))
    assert (soon.get(timeout=20), later.get(timeout=20)) == (3, 5)
    record.refresh_from_db()
    assert record.started_at >= record.scheduled_for.replace(microsecond=0)


def test_failures_reraise_the_task_own_exception_class(celery_worker):
    with pytest.raises(Inventory.Empty, match="shelf 7 is empty"):
        empty_shelf.delay(7).get(timeout=10)
    with pytest.raises(User.DoesNotExist, match="matching query does not exist"):
        missing_user.delay(-1).get(timeout=10)
    record = Job.objects.get(function=missing_user.name)
    assert (record.exception_module, record.exception_qualname) == (
        "django.contrib.auth.models",
        "User.DoesNotExist",
    )


def test_ignore_result_keeps_the_status_not_the_value(celery_worker):
    result = fire_and_forget.delay(21)
    assert result.get(timeout=10) is None
    assert Job.objects.get(key=result.id).status == Status.COMPLETE
    assert add.apply_async((1, 1), ignore_result=True).get(timeout=10) is None


def test_chain_runs_links_in_order_passing_results(celery_worker):
    result = chain(add.s(2, 2), mul.s(4), add.si(1, 1), mul.s(10)).apply_async()
    assert result.get(timeout=30) == 20
    assert result.parent.get(timeout=5) == 2  # add.si ignores the previous result
    assert result.parent.parent.get(timeout=5) == 16
    piped = (add.s(1, 1) | mul.s(3))()
    assert piped.get(timeout=30) == 6
    # Each link is a job of its own, attachable by its id.
    assert AsyncResult(result.id).get(timeout=5) == 20


def test_a_failed_link_stops_the_chain_and_get_raises_it(celery_worker):
    result = chain(add.s(1, 1), empty_shelf.s(), add.s(5)).apply_async()
    with pytest.raises(Inventory.Empty):
        result.get(timeout=30)
    assert not Job.objects.filter(key=result.id).exists()  # the last link never ran


def test_group_and_group_result(celery_worker):
    result = group(add.s(i, i) for i in range(4))()
    assert isinstance(result, GroupResult)
    assert result.join(timeout=30) == [0, 2, 4, 6]
    assert result.ready()
    assert result.successful()
    assert result.completed_count() == 4
    assert result.get(timeout=5) == [0, 2, 4, 6]


def test_chord_calls_the_body_once_with_every_header_result(celery_worker):
    result = chord(add.s(i, i) for i in range(5))(xsum.s())
    assert result.get(timeout=30) == 20
    assert Job.objects.filter(function=xsum.name).count() == 1
    assert isinstance(result.parent, GroupResult)
    assert result.parent.completed_count() == 5


def test_link_runs_the_callback_with_the_result(celery_worker):
    parent = add.apply_async((2, 3), link=mul.s(10).set(task_id="linked-callback"))
    assert parent.get(timeout=20) == 5
    assert AsyncResult("linked-callback").get(timeout=20) == 50


def test_get_feeds_on_message_with_pushed_states(celery_worker):
    messages: list[dict[str, Any]] = []
    result = process_rows.delay(5)
    value = result.get(timeout=30, on_message=messages.append)
    assert value["status"] == "done"
    assert messages[-1]["status"] == states.SUCCESS
    assert messages[-1]["result"] == value
    progress = [m for m in messages if m["status"] == "PROGRESS"]
    assert progress  # each update_state the attacher saw, as Celery's meta
    assert all(m["task_id"] == result.id for m in messages)
    assert {"current", "total", "description"} <= set(progress[-1]["result"])


def test_on_message_hears_started_only_from_a_task_that_tracks_it(celery_worker, tmp_path):
    gate, hold = tmp_path / "gate", tmp_path / "hold"
    gate.touch()
    hold.touch()
    messages: list[dict[str, Any]] = []
    assert (
        wait_then_report.delay(str(gate), str(hold)).get(timeout=30, on_message=messages.append)
        == "released"
    )
    assert [m["status"] for m in messages] == [states.STARTED, "PROGRESS", states.SUCCESS]
    untracked: list[dict[str, Any]] = []
    process_rows.delay(2).get(timeout=30, on_message=untracked.append)
    assert states.STARTED not in [m["status"] for m in untracked]


def test_get_timeout_raises_celery_timeout_error(gearattach_gearmand):
    result = add.delay(1, 2)
    with pytest.raises(TimeoutError):
        result.get(timeout=0.3)
    with pytest.raises(NotImplementedError, match="on_interval"):
        result.get(timeout=0.3, on_interval=print)


def test_delay_on_commit_submits_after_the_commit_only(gearattach_gearmand):
    with transaction.atomic():
        add.delay_on_commit(1, 2)  # returns None, as Celery's does
        assert not Job.objects.exists()
    assert Job.objects.count() == 1

    def rolled_back() -> None:
        with transaction.atomic():
            add.apply_async_on_commit((3, 4))
            raise RuntimeError("rolled back")

    with pytest.raises(RuntimeError, match="rolled back"):
        rolled_back()
    assert Job.objects.count() == 1  # the callback went with the transaction


def test_task_signals_in_the_submitter_and_the_worker(gearattach_immediate):
    seen: list[tuple[str, object]] = []

    def record(name):
        def receiver(sender=None, **kwargs):
            seen.append((name, kwargs.get("result", kwargs.get("headers", {}).get("task"))))

        return receiver

    receivers = {
        signals.before_task_publish: record("before_publish"),
        signals.after_task_publish: record("after_publish"),
        signals.task_prerun: record("prerun"),
        signals.task_success: record("success"),
        signals.task_postrun: record("postrun"),
    }
    for signal, receiver in receivers.items():
        signal.connect(receiver)
    try:
        assert add.delay(2, 2).get() == 4
    finally:
        for signal, receiver in receivers.items():
            signal.disconnect(receiver)
    names = [name for name, _ in seen]
    assert names == ["before_publish", "prerun", "success", "postrun", "after_publish"]
    assert ("success", 4) in seen


def test_a_chord_forged_through_gearmand_never_reads_other_jobs(celery_worker):
    """Review 3, finding 2 (chord metadata): a host on gearmand's network submits a
    chord header job whose metadata names someone else's job as a header sibling and a
    body under a key it chose; the body would then receive that job's result (and
    send it across gearmand, to be read there)."""
    secret = add.delay(20, 22)
    assert secret.get(timeout=20) == 42
    meta = {
        "chord": {
            "header": [[add.name, secret.id], [add.name, "forged-chord"]],
            "body": dict(xsum.s().set(task_id="stolen")),
        }
    }
    payload = json.dumps({"args": [1, 1], "kwargs": {"__celery__": meta}})
    port = str(conf.SERVERS[0].port)
    sent = subprocess.run(
        ["gearman", "-p", port, "-f", add.name, "-u", "forged-chord", "-b", payload],
        capture_output=True,
        timeout=30,
    )
    assert sent.returncode == 0, sent.stderr
    header = wait_until(
        lambda: Job.objects.filter(key="forged-chord").finished().first(),
        what="the forged header job to end",
    )
    assert header.status == Status.FAILED, Job.objects.filter(key="stolen").values("arguments")
    assert "chord metadata of this job is not signed" in header.error
    assert not Job.objects.filter(key="stolen").exists()
    # A chord this site made still runs its body (the test above, in short).
    assert chord([add.s(1, 2), add.s(3, 4)])(xsum.s()).get(timeout=30) == 10
