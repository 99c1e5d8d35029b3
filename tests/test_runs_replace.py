"""``on_conflict="replace"`` (latest wins): a newer submit cancels the run and takes over.

Real gearmand, three worker processes (``tests.preview`` is ``tests.probe`` registered
with ``@task(on_conflict="replace")``), a burst of submits from several processes.
"""

from __future__ import annotations

import pytest

from django_gearattach import attach, submit
from django_gearattach.models import Job, Status
from django_gearattach.policies import OnConflict, RunReason
from tests.helpers import AttachThread, foreground_clients, wait_for_status, wait_until
from tests.triggers import events, starts

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def quick_cancels(monkeypatch):
    """Workers that look for a cancel every 0.1 s and stop a deaf task after 1 s."""
    monkeypatch.setenv("GEARATTACH_CANCEL_CHECK_INTERVAL", "0.1")
    monkeypatch.setenv("GEARATTACH_CANCEL_GRACE", "1")


def assert_one_run_at_a_time(log_path):
    """Each run's start comes after the end (or cancel) of the run before it."""
    running: str | None = None
    for event, _, tag in events(log_path):
        if event == "start":
            assert running is None, f"{tag} started while {running} ran"
            running = tag
        else:
            assert running == tag
            running = None


def test_a_burst_from_several_processes_runs_one_at_a_time_and_the_latest_wins(
    quick_cancels, workers, triggers, log_path, tmp_path
):
    args = [str(log_path)]
    never = str(tmp_path / "never")  # every run but the last waits until it is cancelled
    first = submit("tests.preview", args, {"gate": never, "tag": "first"}, key="pv")
    wait_until(lambda: len(starts(log_path)) == 1, what="the first run to start")
    triggers.start(
        4,
        function="tests.preview",
        key="pv",
        args=args,
        kwargs={"gate": never},
        count=10,
        tag=True,
        pause=0.03,
    )
    triggers.release()
    seen = [entry for result in triggers.results() for entry in result["seen"]]
    assert len(seen) == 40
    last = submit("tests.preview", args, {"steps": 3, "tag": "last"}, key="pv")
    assert last.pk == first.pk
    outcome = list(attach("tests.preview", "pv", timeout=30))[-1]
    assert outcome.result == {"tag": "last"}
    record = wait_for_status("tests.preview", "pv", Status.COMPLETE)
    assert record.next_reason == ""
    assert_one_run_at_a_time(log_path)
    lines = events(log_path)
    assert lines[-2:][0][0] == "start"
    assert lines[-1][0] == "end"
    assert lines[-1][2] == "last"
    assert [event for event, _, _ in lines].count("end") == 1  # every other run was cancelled


def test_the_attachers_of_a_replaced_run_hear_superseded_and_get_the_new_outcome(
    quick_cancels, workers, log_path, tmp_path
):
    args = [str(log_path)]
    job = submit("tests.preview", args, {"gate": str(tmp_path / "never"), "tag": "a"}, key="pv2")
    wait_until(lambda: len(starts(log_path)) == 1, what="the first run to start")
    follower = AttachThread("tests.preview", "pv2")
    follower.start()
    wait_until(lambda: foreground_clients(job.server, "pv2") == 1, what="the attacher")
    replacing = submit("tests.preview", args, {"tag": "b"}, key="pv2")
    assert (replacing.run_number, replacing.next_reason) == (1, OnConflict.REPLACE)
    assert Job.objects.get(key="pv2").cancel_requested_at is not None  # cancel()'s own path
    got = follower.result()
    names = [event.event for event in got]
    assert "superseded" in names
    assert names.index("superseded") < len(names) - 1
    assert (got[-1].event, got[-1].result) == ("complete", {"tag": "b"})
    record = Job.objects.get(key="pv2")
    assert (record.run_number, record.run_reason, record.status) == (
        2,
        RunReason.REPLACE,
        Status.COMPLETE,
    )
    assert [(event, tag) for event, _, tag in events(log_path)] == [
        ("start", "a"),
        ("cancelled", "a"),
        ("start", "b"),
        ("end", "b"),
    ]


def test_a_replacement_while_the_run_waits_takes_its_place(gearmand, worker_factory, log_path):
    args = [str(log_path)]
    first = submit("tests.preview", args, {"tag": "a"}, key="pv3")
    second = submit("tests.preview", args, {"tag": "b"}, key="pv3")
    assert second.pk == first.pk
    assert (second.run_number, second.run_reason, second.arguments["kwargs"]["tag"]) == (
        2,
        RunReason.REPLACE,
        "b",
    )
    worker_factory([gearmand])
    assert list(attach("tests.preview", "pv3", timeout=20))[-1].result == {"tag": "b"}
    assert [tag for _, _, tag in events(log_path)] == ["b", "b"]  # one run: start, end


def test_a_run_that_ignores_the_cancel_is_stopped_after_the_grace_and_replaced(
    quick_cancels, workers, log_path, tmp_path
):
    args = [str(log_path)]
    kwargs = {"gate": str(tmp_path / "never"), "tag": "deaf", "deaf": True}
    job = submit("tests.preview", args, kwargs, key="pv4")
    wait_until(lambda: len(starts(log_path)) == 1, what="the first run to start")
    deaf_pid = Job.objects.get(key="pv4").worker_pid
    follower = AttachThread("tests.preview", "pv4")
    follower.start()
    wait_until(lambda: foreground_clients(job.server, "pv4") == 1, what="the attacher")
    submit("tests.preview", args, {"tag": "heard"}, key="pv4")
    got = follower.result()
    names = [event.event for event in got]
    assert "superseded" in names
    assert names.index("superseded") < len(names) - 1
    assert (got[-1].event, got[-1].result) == ("complete", {"tag": "heard"})
    record = Job.objects.get(key="pv4")
    assert (record.run_number, record.status) == (2, Status.COMPLETE)
    assert record.worker_pid != deaf_pid  # the deaf run's process was ended
    assert [(event, tag) for event, _, tag in events(log_path)] == [
        ("start", "deaf"),
        ("start", "heard"),
        ("end", "heard"),
    ]
