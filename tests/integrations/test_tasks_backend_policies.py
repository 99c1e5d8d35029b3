"""Key policies through the Django Tasks backend: OPTIONS["KEY_POLICIES"] gives a task a
key made of some of its arguments; what does not map is refused when the task is defined.

Real gearmand and three worker processes.
"""

from __future__ import annotations

import pytest
from django.core.exceptions import ImproperlyConfigured

from django_gearattach.integrations.tasks_backend import GearmanBackend
from django_gearattach.integrations.tasks_compat import TaskResultStatus, default_task_backend
from django_gearattach.models import Job, Status
from django_gearattach.policies import OnConflict, RunReason
from tests.helpers import wait_for_status, wait_until
from tests.tasksapp import tasks as dtasks

pytestmark = pytest.mark.django_db(transaction=True)


def test_enqueues_of_one_tenant_during_a_run_share_its_id_and_one_follow_up(workers, tmp_path):
    gate = tmp_path / "gate"
    first = dtasks.rebuild_index.enqueue(7, gate=str(gate), tag="first")
    wait_for_status(dtasks.rebuild_index.module_path, first.id, Status.RUNNING)
    later = [dtasks.rebuild_index.enqueue(tenant_id=7, tag=f"save-{n}") for n in range(4)]
    assert {result.id for result in later} == {first.id}  # one key per tenant
    other = dtasks.rebuild_index.enqueue(8)
    assert other.id != first.id
    waiting = Job.objects.get(key=first.id)
    assert (waiting.run_number, waiting.next_reason) == (1, OnConflict.FOLLOW_UP)
    gate.touch()

    def follow_up_done():
        result = default_task_backend.get_result(first.id)
        record = Job.objects.get(key=first.id)
        return result if record.run_number == 2 and result.is_finished else None

    result = wait_until(follow_up_done, what="the follow-up")
    assert result.status == TaskResultStatus.SUCCESSFUL
    assert result.return_value == {"tenant": 7, "tag": "save-0"}
    assert Job.objects.get(key=first.id).run_reason == RunReason.FOLLOW_UP


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"key": ["tenant_id"], "stale_while_revalidate": 60}, "a TaskResult has one status"),
        ({"key": ["tenant_id"], "maxage": 60}, "unknown option 'maxage'"),
        ({"key": ["tenant"]}, "'key' must name the arguments .* among tenant_id, gate, tag"),
        ({"on_conflict": "follow_up"}, "'key' must name the arguments"),
        ({"key": "tenant_id", "on_conflict": "newest"}, "on_conflict must be one of"),
    ],
)
def test_what_does_not_map_is_refused_with_the_reason(entry, message):
    path = dtasks.rebuild_index.module_path
    backend = GearmanBackend("keyed", {"OPTIONS": {"KEY_POLICIES": {path: entry}}})
    with pytest.raises(ImproperlyConfigured, match=message):
        backend.key_policy(dtasks.rebuild_index)


def test_the_key_is_the_same_however_the_arguments_are_passed():
    backend = GearmanBackend(
        "keyed",
        {"OPTIONS": {"KEY_POLICIES": {dtasks.rebuild_index.module_path: {"key": "tenant_id"}}}},
    )
    keyed = backend.key_policy(dtasks.rebuild_index)
    assert keyed is not None
    task = dtasks.rebuild_index
    assert keyed.key_for(task, [7], {}) == keyed.key_for(task, [], {"tenant_id": 7, "tag": "x"})
    assert keyed.key_for(task, [7], {}) != keyed.key_for(task, [8], {})
    assert len(keyed.key_for(task, [7], {})) <= 63
