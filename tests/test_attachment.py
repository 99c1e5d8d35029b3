"""The attach guarantees, each against real gearmand and a real gearworker."""

from __future__ import annotations

import pytest

from django_gearattach import AttachTimeout, JobNotFound, attach, submit
from django_gearattach.clients import get_client
from django_gearattach.gearman import linger
from django_gearattach.gearman.rendezvous import Address
from django_gearattach.models import Job, Status
from django_gearattach.payload import ATTACH_MARKER
from tests.conftest import executions
from tests.helpers import AttachThread, foreground_clients, wait_for_status, wait_until

pytestmark = pytest.mark.django_db(transaction=True)


def test_attach_to_a_finished_job_answers_from_the_record_and_runs_nothing(worker, log_path):
    job = submit("tests.record", [str(log_path)])
    first = list(attach("tests.record", job.key, timeout=20))
    assert first[-1].event == "complete"
    # Raw gearmand forgot the key: the same submit would run again. Attach must not.
    again = list(attach("tests.record", job.key, timeout=20))
    assert again == [first[-1]]
    assert executions(log_path) == [first[-1].result["done"]]


def test_unknown_key_raises_job_not_found_and_creates_nothing(gearmand):
    with pytest.raises(JobNotFound, match="never submitted"):
        list(attach("tests.record", "no-such-key"))
    assert not Job.objects.exists()
    assert (
        get_client().status_unique(Address.parse(gearmand.address), b"no-such-key").known is False
    )


def test_many_attachers_get_every_event_and_the_job_runs_once(gearmand, worker, tmp_path):
    gate = tmp_path / "gate"
    job = submit("tests.chatty", [str(gate)])
    wait_for_status("tests.chatty", job.key, Status.RUNNING)
    attachers = [AttachThread("tests.chatty", job.key) for _ in range(5)]
    for thread in attachers:
        thread.start()
    wait_until(lambda: foreground_clients(gearmand.address, job.key) == 5, what="5 attachers")
    gate.touch()
    expected = [
        {"event": "status", "numerator": 1, "denominator": 3},
        {"event": "data", "data": {"partial": [1, 2]}},
        {"event": "warning", "message": "careful"},
        {"event": "status", "numerator": 3, "denominator": 3},
        {"event": "complete", "result": {"answer": 42}},
    ]
    for thread in attachers:
        assert [e.as_dict() for e in thread.result()] == expected
    record = Job.objects.get(key=job.key)
    assert (record.status, record.attempts, record.data) == ("complete", 1, {"partial": [1, 2]})
    assert (record.progress_numerator, record.progress_denominator) == (3, 3)


def test_the_race_where_the_job_ends_while_the_attacher_connects_runs_it_once(
    gearmand, worker, log_path
):
    job = submit("tests.record", [str(log_path)])
    record = wait_for_status("tests.record", job.key, Status.COMPLETE)
    # The attacher saw the job running, but it ended before the foreground submit landed:
    # the marker becomes a job of its own, which the worker answers from the record.
    stream = get_client().foreground(
        Address.parse(gearmand.address), "tests.record", job.key.encode(), ATTACH_MARKER
    )
    with stream:
        events = [e for e in stream.events() if e is not None]
    assert [e.kind for e in events] == ["complete"]
    assert b'"done"' in events[0].data
    assert executions(log_path) == [record.result["done"]]


def test_attachers_racing_many_short_jobs_never_cause_a_second_run(
    worker_factory, gearmand, log_path
):
    worker_factory([gearmand], "--concurrency", "2")
    jobs = [submit("tests.record", [str(log_path)]) for _ in range(20)]
    threads = [AttachThread("tests.record", j.key) for j in jobs for _ in range(2)]
    for thread in threads:
        thread.start()
    outcomes: dict[str, set[str]] = {}
    for thread in threads:
        events = thread.result()
        assert events[-1].event == "complete"
        outcomes.setdefault(thread.key, set()).add(events[-1].result["done"])
    assert all(len(results) == 1 for results in outcomes.values())
    assert sorted(executions(log_path)) == sorted(r.pop() for r in outcomes.values())


def test_an_attacher_that_gives_up_on_a_queued_job_never_makes_it_vanish(
    gearmand, worker_factory, log_path
):
    job = submit("tests.record", [str(log_path)])  # no worker yet: the job stays queued
    parked = linger.parked_count()
    with pytest.raises(AttachTimeout):
        list(attach("tests.record", job.key, timeout=0.5))
    # It followed the queued job in the foreground: its connection is parked, not closed.
    assert foreground_clients(gearmand.address, job.key) == 1
    assert linger.parked_count() == parked + 1
    worker_factory([gearmand])
    events = list(attach("tests.record", job.key, timeout=20))
    # Until the worker registers, the attacher hears that none runs the job.
    assert [e.event for e in events if e.event != "unserved"] == ["started", "complete"]
    assert len(executions(log_path)) == 1
    wait_until(lambda: linger.parked_count() == parked, what="linger to let go")


def test_a_job_gearmand_forgot_is_revived_from_its_record(gearmand, worker_factory, log_path):
    job = submit("tests.add", [2, 3])
    gearmand.restart()  # no persistent queue: the queued job is gone from gearmand
    assert (
        get_client().status_unique(Address.parse(gearmand.address), job.key.encode()).known
        is False
    )
    worker_factory([gearmand])
    events = list(attach("tests.add", job.key, timeout=20))
    assert events[-1].as_dict() == {"event": "complete", "result": 5}
    assert Job.objects.get(key=job.key).attempts == 1


def test_a_failing_task_reports_its_error_and_keeps_the_traceback(worker):
    job = submit("tests.fail", ["kaput"])
    events = list(attach("tests.fail", job.key, timeout=20))
    assert events[-1].as_dict() == {"event": "failed", "error": "ValueError: kaput"}
    record = Job.objects.get(key=job.key)
    assert record.status == Status.FAILED
    assert "raise ValueError(message)" in record.traceback
    # Attaching later gives the same outcome from the record.
    assert list(attach("tests.fail", job.key)) == [events[-1]]


def test_a_result_that_is_not_json_fails_the_job_clearly(worker):
    job = submit("tests.unserialisable")
    events = list(attach("tests.unserialisable", job.key, timeout=20))
    assert events[-1].event == "failed"
    assert "not JSON serialisable" in events[-1].error


def test_attach_times_out_on_a_running_job_and_leaves_it_running(gearmand, worker, tmp_path):
    gate = tmp_path / "gate"
    job = submit("tests.chatty", [str(gate)])
    wait_for_status("tests.chatty", job.key, Status.RUNNING)
    with pytest.raises(AttachTimeout):
        list(attach("tests.chatty", job.key, timeout=0.3))
    gate.touch()
    assert list(attach("tests.chatty", job.key, timeout=20))[-1].result == {"answer": 42}


def test_attach_with_every_server_down_says_the_state_is_unknown(settings):
    from django_gearattach.gearman.errors import ConnectionFailed
    from django_gearattach.testing import free_port

    settings.GEARATTACH = {**settings.GEARATTACH, "SERVERS": [f"127.0.0.1:{free_port()}"]}
    with pytest.raises(ConnectionFailed, match="state is unknown"):
        list(attach("tests.add", "some-key"))
    assert not Job.objects.exists()


def test_attach_waits_out_a_vanished_server_then_times_out_cleanly(gearmand):
    job = submit("tests.add", [1, 2])
    gearmand.stop()
    with pytest.raises(AttachTimeout):
        list(attach(job, timeout=1.0))
    assert Job.objects.get(pk=job.pk).status == Status.QUEUED  # nothing lost
