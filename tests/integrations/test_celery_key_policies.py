"""Key policies through the Celery shim: the task options ``on_conflict`` and ``max_age``
(also per ``apply_async``, with a ``task_id``); ``stale_while_revalidate`` is refused.

Real gearmand and three worker processes.
"""

from __future__ import annotations

import time

import pytest

from django_gearattach.celery import AsyncResult, shared_task
from django_gearattach.models import Job, Status
from django_gearattach.policies import OnConflict, RunReason
from tests.celeryapp.tasks import add, reindex
from tests.helpers import wait_for_status, wait_until

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_task_option_gives_a_task_id_one_follow_up(workers, log_path, tmp_path):
    gate = tmp_path / "gate"
    reindex.apply_async((str(log_path), str(gate), "first"), task_id="tenant-7")
    wait_for_status(reindex.name, "tenant-7", Status.RUNNING)
    for n in range(5):
        reindex.apply_async((str(log_path), None, f"save-{n}"), task_id="tenant-7")
    waiting = Job.objects.get(key="tenant-7")
    assert (waiting.run_number, waiting.next_reason) == (1, OnConflict.FOLLOW_UP)
    gate.touch()
    wait_until(
        lambda: Job.objects.filter(key="tenant-7", run_number=2, status=Status.COMPLETE).exists(),
        what="the follow-up",
    )
    assert AsyncResult("tenant-7").get(timeout=10) == "save-0"  # the first trigger's
    assert log_path.read_text().split("\n")[:2] == ["start first", "start save-0"]
    assert Job.objects.get(key="tenant-7").run_reason == RunReason.FOLLOW_UP


def test_apply_async_may_override_max_age_for_its_task_id(workers):
    assert add.apply_async((1, 2), task_id="sum-1").get(timeout=20) == 3
    assert add.apply_async((5, 5), task_id="sum-1").get(timeout=20) == 3  # stored
    time.sleep(0.3)
    again = add.apply_async((5, 5), task_id="sum-1", max_age=0.2)
    assert again.get(timeout=20) == 10
    assert Job.objects.get(key="sum-1").run_reason == RunReason.EXPIRED


def test_what_the_shim_cannot_map_is_refused_with_the_reason():
    with pytest.raises(NotImplementedError, match="AsyncResult has no stale state"):
        shared_task(stale_while_revalidate=60)(lambda: None)
    with pytest.raises(NotImplementedError, match="AsyncResult has no stale state"):
        add.apply_async((1, 2), task_id="s", stale_while_revalidate=60)
    with pytest.raises(ValueError, match=r"apply_async\(max_age=\.\.\.\) needs task_id="):
        add.apply_async((1, 2), max_age=60)
    assert not Job.objects.exists()
