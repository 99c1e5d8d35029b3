"""``max_age`` and ``rerun=True``: a finished key runs again, once, however many ask.

Real gearmand, three worker processes, and submits from several processes of their own.
"""

from __future__ import annotations

import time

import pytest

from django_gearattach import attach, submit
from django_gearattach.models import Job, Status
from django_gearattach.policies import RunReason
from tests.helpers import wait_for_status
from tests.triggers import starts

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_stored_outcome_answers_until_max_age_then_the_key_runs_again(workers, log_path):
    first = submit("tests.probe", [str(log_path)], {"tag": "a"}, key="age-1", max_age=1)
    assert list(attach(first, timeout=20))[-1].result == {"tag": "a"}
    again = submit("tests.probe", [str(log_path)], {"tag": "b"}, key="age-1", max_age=1)
    assert (again.status, again.run_number, again.result) == (Status.COMPLETE, 1, {"tag": "a"})
    time.sleep(1.2)
    expired = submit("tests.probe", [str(log_path)], {"tag": "c"}, key="age-1", max_age=1)
    assert (expired.run_number, expired.run_reason) == (2, RunReason.EXPIRED)
    assert expired.is_active
    assert list(attach(expired, timeout=20))[-1].result == {"tag": "c"}
    record = Job.objects.get(key="age-1")
    assert record.previous_result == {"tag": "a"}  # kept from the run before
    assert len(starts(log_path)) == 2


def test_under_max_age_a_failure_runs_again_at_the_next_submit(workers):
    failed = submit("tests.fail", ["first"], key="age-2", max_age=600)
    assert list(attach(failed, timeout=20))[-1].event == "failed"
    again = submit("tests.fail", ["second"], key="age-2", max_age=600)
    assert (again.run_number, again.run_reason) == (2, RunReason.EXPIRED)
    wait_for_status("tests.fail", "age-2", Status.FAILED)
    assert Job.objects.get(key="age-2").error == "ValueError: second"


@pytest.mark.parametrize(
    ("options", "reason"),
    [
        ({"max_age": 0.2}, RunReason.EXPIRED),
        ({"max_age": 0.2, "stale_while_revalidate": 60}, RunReason.REFRESH),
        ({"rerun": True}, RunReason.RERUN),
    ],
)
def test_many_processes_finding_a_finished_key_start_one_run(
    workers, triggers, log_path, tmp_path, options, reason
):
    key = "age-3"
    first = submit("tests.probe", [str(log_path)], {"tag": "first"}, key=key)
    assert list(attach(first, timeout=20))[-1].event == "complete"
    time.sleep(0.3)
    gate = tmp_path / "run-gate"  # the next run waits for it: every trigger finds it active
    triggers.start(
        6,
        function="tests.probe",
        key=key,
        args=[str(log_path)],
        kwargs={"gate": str(gate)},
        count=15,
        options=options,
    )
    triggers.release()
    seen = [entry for result in triggers.results() for entry in result["seen"]]
    assert len(seen) == 90
    assert {run for run, _, _ in seen} == {2}  # each submit started run 2 or joined it
    gate.touch()
    wait_for_status("tests.probe", key, Status.COMPLETE)
    record = Job.objects.get(key=key)
    assert record.run_number == 2
    assert record.run_reason == reason
    if reason == RunReason.REFRESH:  # what every submit could answer with meanwhile
        assert record.previous_result == {"tag": "first"}
    assert len(starts(log_path)) == 2


def test_in_immediate_mode_an_expired_key_runs_again_at_once(gearattach_immediate, log_path):
    first = submit("tests.probe", [str(log_path)], {"tag": "a"}, key="now-1", max_age=0)
    assert (first.status, first.result) == (Status.COMPLETE, {"tag": "a"})
    again = submit("tests.probe", [str(log_path)], {"tag": "b"}, key="now-1", max_age=0)
    assert (again.status, again.result, again.run_number) == (Status.COMPLETE, {"tag": "b"}, 2)
    assert len(starts(log_path)) == 2
