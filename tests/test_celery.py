"""The Celery shim's contract beyond the Celery-style module: states, ids, options, errors."""

from __future__ import annotations

import os
import time
from typing import Any

import pytest

from django_gearattach import AttachTimeout, JobNotFound, attach
from django_gearattach.celery import (
    AsyncResult,
    Celery,
    TaskFailed,
    TaskRevokedError,
    shared_task,
    states,
)
from django_gearattach.models import Job, Status
from tests.celeryapp.tasks import add, report_via_current_task, wait_for, wait_then_report

from .helpers import AttachThread, wait_for_status, wait_until

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.mark.parametrize(
    ("option", "reason"),
    [
        ("expires", "Gearman jobs do not expire"),
        ("queue", "Gearman has no named queues"),
        ("routing_key", "routes jobs by task name"),
        ("link_error", "no error callbacks"),
        ("time_limit", "time limits are per task"),
        ("made_up_option", "no Gearman equivalent"),
    ],
)
def test_unsupported_options_name_themselves(option, reason, gearattach_immediate):
    options: dict[str, Any] = {option: 1}
    with pytest.raises(NotImplementedError, match=rf"apply_async\({option}=\.\.\.\).*{reason}"):
        add.apply_async((1, 2), **options)
    assert not Job.objects.exists()


def test_unsupported_decorator_options_name_the_decorator_used():
    with pytest.raises(NotImplementedError, match=r"@shared_task\(base=\.\.\.\).*Task classes"):
        shared_task(base=object)
    with pytest.raises(NotImplementedError, match=r"@app\.task\(queue=\.\.\.\).*queues"):
        Celery("proj").task(queue="q")
    with pytest.raises(NotImplementedError, match=r"@app\.task\(serializer='pickle'\)"):
        Celery("proj").task(serializer="pickle")


def test_unknown_ids_are_pending_but_not_known():
    result = AsyncResult("no-such-task")
    assert result.state == states.PENDING  # as in Celery
    assert result.known is False  # ...but it can be told from a waiting job
    assert result.result is None
    with pytest.raises(JobNotFound):
        result.get(timeout=1)


def test_a_queued_task_is_pending_and_known(gearattach_gearmand):
    result = add.delay(1, 2)
    assert result.state == states.PENDING
    assert result.known is True
    assert not result.ready()
    with pytest.raises(AttachTimeout):
        result.get(timeout=0.3)
    assert isinstance(AttachTimeout("x"), TimeoutError)


def test_started_then_progress_then_success(gearattach_worker, tmp_path):
    gate, hold = tmp_path / "gate", tmp_path / "hold"
    result = wait_then_report.delay(str(gate), str(hold))
    wait_until(lambda: result.state == states.STARTED)
    info = result.info
    assert info == {"pid": gearattach_worker.pid, "hostname": info["hostname"]}
    assert info["hostname"]
    # An attacher sees update_state as WORK_STATUS and WORK_DATA.
    events = []
    wait_until(lambda: Job.objects.get(key=result.id).status == Status.RUNNING)
    gate.touch()
    wait_until(lambda: result.state == "PROGRESS")
    assert result.info == {"current": 1, "total": 2}
    record = Job.objects.get(key=result.id)
    assert (record.progress_numerator, record.progress_denominator) == (1, 2)
    hold.touch()
    for event in attach(record, timeout=10):
        events.append(event.as_dict())
    assert events[-1] == {"event": "complete", "result": "released"}
    assert result.get(timeout=5) == "released"
    assert result.state == states.SUCCESS


def test_without_track_started_a_running_task_is_pending(gearattach_worker, tmp_path, settings):
    gate = tmp_path / "gate"
    result = wait_for.delay(str(gate))
    wait_for_status(wait_for.name, result.id, Status.RUNNING)
    assert result.state == states.PENDING  # Celery's default: PENDING, then SUCCESS
    settings.CELERY_TASK_TRACK_STARTED = True  # the setting, read at access time
    assert result.state == states.STARTED
    gate.touch()
    assert result.get(timeout=10) == "opened"


def test_update_state_reaches_attachers_as_status_and_data(gearattach_worker, tmp_path):
    gate, hold = tmp_path / "gate", tmp_path / "hold"
    result = wait_then_report.delay(str(gate), str(hold))
    wait_for_status(wait_then_report.name, result.id, Status.RUNNING)
    follower = AttachThread(wait_then_report.name, result.id)
    follower.start()
    time.sleep(0.3)  # the attacher joins the running job
    gate.touch()
    wait_until(lambda: any(e.event == "data" for e in follower.events))
    hold.touch()
    events = [e.as_dict() for e in follower.result()]
    assert {"event": "status", "numerator": 1, "denominator": 2} in events
    assert {
        "event": "data",
        "data": {"state": "PROGRESS", "meta": {"current": 1, "total": 2}},
    } in events
    assert events[-1] == {"event": "complete", "result": "released"}


def test_revoke_cancels_a_queued_task(gearattach_gearmand):
    result = add.delay(1, 2)
    result.revoke()
    assert result.state == states.REVOKED
    assert result.ready()
    with pytest.raises(TaskRevokedError):
        result.get()
    result.revoke(terminate=True)  # a finished job: nothing to stop
    assert result.state == states.REVOKED
    with pytest.raises(NotImplementedError, match=r"revoke\(signal=\.\.\.\)"):
        result.revoke(terminate=True, signal="SIGKILL")


def test_an_exception_class_not_imported_here_becomes_task_failed():
    Job.objects.create(
        function="elsewhere.task",
        key="k-remote",
        status=Status.FAILED,
        error="QuotaExceeded: 3 of 2",
        traceback='Traceback (most recent call last):\n  File "x.py", line 1, in run\n'
        "    raise QuotaExceeded(...)\nbilling.errors.QuotaExceeded: 3 of 2\n",
    )
    result = AsyncResult("k-remote")
    with pytest.raises(TaskFailed, match="QuotaExceeded: 3 of 2") as caught:
        result.get()
    assert "billing.errors.QuotaExceeded" in caught.value.traceback
    assert result.name == "elsewhere.task"


@pytest.mark.parametrize(
    ("priority", "gearman"),
    [
        (None, "normal"),
        (0, "low"),
        (2, "low"),
        (5, "normal"),
        (7, "high"),
        (9, "high"),
        ("high", "high"),
    ],
)
def test_priorities(priority, gearman, gearattach_immediate):
    result = add.apply_async((1, 1), priority=priority)
    assert Job.objects.get(key=result.id).priority == gearman


def test_a_task_id_is_the_job_key_and_is_idempotent(gearattach_immediate):
    first = add.apply_async((1, 2), task_id="order-17")
    again = add.apply_async((5, 5), task_id="order-17")
    assert first.get() == again.get() == 3  # the finished job's stored outcome
    assert Job.objects.filter(key="order-17").count() == 1


def test_an_app_object_and_current_task(gearattach_immediate):
    app = Celery("proj")
    app.config_from_object("django.conf:settings", namespace="CELERY")

    @app.task(bind=True, name="proj.double")
    def double(self, x):
        self.update_state(state="PROGRESS", meta={"current": 1, "total": 1})
        return {"value": 2 * x, "id": self.request.id}

    result = double.delay(21)
    assert result.get() == {"value": 42, "id": result.id}
    assert app.AsyncResult(result.id).successful()
    record = Job.objects.get(key=result.id)
    assert record.data == {"state": "PROGRESS", "meta": {"current": 1, "total": 1}}

    reported = report_via_current_task.delay(3)
    assert reported.get() == 3
    record = Job.objects.get(key=reported.id)
    assert (record.progress_numerator, record.progress_denominator) == (3, 3)
    assert record.data == {"state": "CRUNCHING", "meta": {"current": 3, "total": 3}}


def test_update_state_of_another_task_is_refused(gearattach_immediate):
    @shared_task(bind=True, name="tests.meddle")
    def meddle(self):
        self.update_state(task_id="someone-else", state="PROGRESS")

    result = meddle.delay()
    assert result.failed()
    assert "only update the running task's own state" in str(result.result)


def test_in_immediate_mode_retries_run_at_once(gearattach_immediate, tmp_path):
    from tests.celeryapp.tasks import flaky

    result = flaky.delay(str(tmp_path / "log"), 2)
    assert result.get() == {"attempt": 3, "retries": 2}
    assert Job.objects.get(key=result.id).retries == 2


def test_get_inside_a_task_is_refused_as_in_celery(gearattach_immediate):
    @shared_task(name="tests.nested_get")
    def nested_get():
        return add.delay(1, 1).get()

    result = nested_get.delay()
    assert result.failed()
    assert "Never call result.get() within a task" in str(result.result)


def test_celery_settings_without_effect_are_reported_by_check(settings):
    from django.core import checks

    from django_gearattach.celery.config import check_configuration

    app = Celery("checked")
    app.config_from_object("django.conf:settings", namespace="CELERY")
    settings.CELERY_TASK_ROUTES = {"x": "y"}
    settings.CELERY_BROKER_URL = "redis://"
    messages = [m for m in check_configuration() if "task_routes" in m.msg]
    assert [m.id for m in messages] == ["gearattach.W101"]
    assert "gearworker --function" in messages[0].hint
    assert not [m for m in check_configuration() if "broker_url" in m.msg]
    registered: list[Any] = list(checks.registry.registry.get_checks())
    assert check_configuration in registered


def test_importing_the_shim_touches_no_model_and_no_setting():
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from django_gearattach.celery import Celery, shared_task, chain, group, chord\n"
        "from django_gearattach.celery.result import AsyncResult, GroupResult\n"
        "from django_gearattach.celery.exceptions import Retry, MaxRetriesExceededError\n"
        "from django_gearattach.celery import states, signals, schedules\n"
        "from django_gearattach.celery.utils.log import get_task_logger\n"
        "app = Celery('proj')\n"
        "app.config_from_object('django.conf:settings', namespace='CELERY')\n"
        "app.autodiscover_tasks()\n"
        "@app.task(bind=True, ignore_result=True)\n"
        "def debug_task(self): pass\n"
        "from django.apps import apps\n"
        "from django.conf import settings\n"
        "assert not apps.ready and not settings.configured\n"
        "assert 'django_gearattach.models' not in sys.modules\n"
        "print('lazy')\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60
    )
    assert (done.returncode, done.stdout.strip()) == (0, "lazy"), done.stderr


def test_current_app_uuid_and_a_task_class_for_isinstance():
    from django_gearattach.celery import Task, current_app, uuid
    from django_gearattach.celery.utils import uuid as utils_uuid

    assert current_app.conf.task_track_started in (True, False)
    assert isinstance(current_app.AsyncResult("x"), AsyncResult)
    assert len(uuid()) == len(utils_uuid()) == 32
    assert isinstance(add, Task)
