"""``on_conflict="follow_up"``: at most one run going and one waiting per key.

Real gearmand, three worker processes (``tests.rebuild`` is ``tests.probe`` registered
with ``@task(on_conflict="follow_up")``), and triggers from several processes.
"""

from __future__ import annotations

import os
import signal

import pytest

from django_gearattach import attach, submit
from django_gearattach.models import Job, Status
from django_gearattach.policies import OnConflict, RunReason
from tests.helpers import AttachThread, foreground_clients, wait_for_status, wait_until
from tests.triggers import events, starts

pytestmark = pytest.mark.django_db(transaction=True)


def test_triggers_from_several_processes_during_a_run_give_exactly_one_follow_up(
    workers, triggers, log_path, tmp_path
):
    gate = tmp_path / "gate"
    first = submit("tests.rebuild", [str(log_path)], {"gate": str(gate), "tag": "first"}, key="ix")
    wait_for_status("tests.rebuild", "ix", Status.RUNNING)
    follower = AttachThread("tests.rebuild", "ix")  # an attacher of run 1
    follower.start()
    wait_until(lambda: foreground_clients(first.server, "ix") == 1, what="the attacher")
    triggers.start(6, function="tests.rebuild", key="ix", args=[str(log_path)], count=30, tag=True)
    triggers.release()
    seen = [entry for result in triggers.results() for entry in result["seen"]]
    assert len(seen) == 180
    assert all(run == 1 and status == Status.RUNNING for run, status, _ in seen)
    waiting = Job.objects.get(key="ix")
    assert waiting.next_reason == OnConflict.FOLLOW_UP
    asked_by = waiting.next_arguments["kwargs"]["tag"]  # the first trigger's arguments
    gate.touch()
    assert follower.result()[-1].result == {"tag": "first"}  # run 1's outcome
    wait_until(lambda: Job.objects.get(key="ix").run_number == 2, what="the follow-up")
    record = wait_for_status("tests.rebuild", "ix", Status.COMPLETE)
    assert (record.run_number, record.run_reason) == (2, RunReason.FOLLOW_UP)
    assert record.result == {"tag": asked_by}
    assert record.previous_result == {"tag": "first"}
    assert record.next_reason == ""
    assert [tag for event, _, tag in events(log_path) if event == "start"] == ["first", asked_by]


def test_a_trigger_while_the_run_waits_joins_it_and_one_after_the_end_runs_again(
    gearmand, worker_factory, log_path
):
    first = submit("tests.rebuild", [str(log_path)], {"tag": "a"}, key="ix2")
    joined = submit("tests.rebuild", [str(log_path)], {"tag": "b"}, key="ix2")
    assert (joined.pk, joined.run_number, joined.next_reason) == (first.pk, 1, "")
    worker_factory([gearmand])
    assert list(attach(first, timeout=20))[-1].result == {"tag": "a"}
    after = submit("tests.rebuild", [str(log_path)], {"tag": "c"}, key="ix2")
    assert (after.run_number, after.run_reason) == (2, RunReason.EXPIRED)  # max_age 0
    assert list(attach(after, timeout=20))[-1].result == {"tag": "c"}
    assert len(starts(log_path)) == 2


def test_a_worker_killed_during_the_follow_up_runs_it_again_and_no_third_run(
    workers, log_path, tmp_path
):
    gate = tmp_path / "gate"
    args = [str(log_path)]
    submit("tests.rebuild", args, {"gate": str(gate), "tag": "one"}, key="ix3")
    wait_for_status("tests.rebuild", "ix3", Status.RUNNING)
    later_gate = tmp_path / "later"
    submit("tests.rebuild", args, {"gate": str(later_gate), "tag": "two"}, key="ix3")
    gate.touch()
    wait_until(lambda: len(starts(log_path)) == 2, what="the follow-up to start")
    follow_up = Job.objects.get(key="ix3")
    assert (follow_up.run_number, follow_up.status) == (2, Status.RUNNING)
    os.kill(follow_up.worker_pid, signal.SIGKILL)
    # gearmand gives the job to another worker process, which takes the dead run's claim.
    wait_until(lambda: len(starts(log_path)) == 3, what="the follow-up to start again")
    later_gate.touch()
    record = wait_for_status("tests.rebuild", "ix3", Status.COMPLETE, timeout=30)
    assert (record.run_number, record.result, record.attempts) == (2, {"tag": "two"}, 2)
    assert [tag for event, _, tag in events(log_path) if event == "start"] == [
        "one",
        "two",
        "two",
    ]


def test_the_attachers_of_a_failed_run_follow_its_follow_up(workers, tmp_path):
    gate = tmp_path / "gate"
    job = submit("tests.fail_after", [str(gate), "first"], key="ix4", on_conflict="follow_up")
    wait_for_status("tests.fail_after", "ix4", Status.RUNNING)
    follower = AttachThread("tests.fail_after", "ix4")
    follower.start()
    wait_until(lambda: foreground_clients(job.server, "ix4") == 1, what="the attacher")
    opened = tmp_path / "open"
    submit("tests.fail_after", [str(opened), "second"], key="ix4", on_conflict="follow_up")
    opened.touch()
    gate.touch()
    last = follower.result()[-1]
    assert (last.event, last.error) == ("failed", "ValueError: second")
    assert Job.objects.get(key="ix4").run_number == 2


def test_asubmit_folds_into_the_waiting_follow_up_too(workers, log_path, tmp_path):
    from asgiref.sync import async_to_sync

    from django_gearattach import asubmit

    gate = tmp_path / "gate"
    submit("tests.rebuild", [str(log_path)], {"gate": str(gate), "tag": "one"}, key="ix5")
    wait_for_status("tests.rebuild", "ix5", Status.RUNNING)
    for n in range(3):
        job = async_to_sync(asubmit)("tests.rebuild", [str(log_path)], {"tag": f"t{n}"}, key="ix5")
        assert (job.run_number, job.next_reason) == (1, OnConflict.FOLLOW_UP)
    gate.touch()
    wait_until(
        lambda: Job.objects.filter(key="ix5", run_number=2, status=Status.COMPLETE).exists(),
        what="the follow-up",
    )
    assert [tag for event, _, tag in events(log_path) if event == "start"] == ["one", "t0"]
