"""``async def`` tasks on the workers' event loops, with real gearmand and real
gearworker processes (worker/asyncrunner.py, asyncjob.py, asyncwatch.py)."""

from __future__ import annotations

import os
import signal
from datetime import timedelta

import pytest

from django_gearattach import SoftTimeLimitExceeded, cancel, streams, submit
from django_gearattach.cancelling import CANCELLED_RUNNING_ERROR
from django_gearattach.models import Job, Status
from django_gearattach.operations import Cancel
from django_gearattach.policies import OnConflict, RunReason
from django_gearattach.testing import wait_for_workers
from tests.conftest import executions
from tests.helpers import AttachThread, key_homed_on, second_copy, wait_for_status, wait_until

pytestmark = pytest.mark.django_db(transaction=True)


def _overlap(intervals: list[tuple[float, float]]) -> int:
    """The most intervals open at one moment."""
    edges = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    most = open_now = 0
    for _, step in edges:  # an end sorts before a start at the same instant
        open_now += step
        most = max(most, open_now)
    return most


def test_fifty_async_jobs_run_at_once_in_one_process(gearmand, worker):
    wait_for_workers(gearmand.address, "tests.async_nap")
    jobs = [submit("tests.async_nap", [1.0, str(n)]) for n in range(60)]
    records = [wait_for_status("tests.async_nap", j.key, Status.COMPLETE, 60) for j in jobs]
    results = [r.result for r in records]
    assert {r["pid"] for r in results} == {worker.pid}
    assert {r.worker_pid for r in records} == {worker.pid}
    assert all(r.attempts == 1 for r in records)
    # Every job started before any ended: all 60 were in flight together.
    assert max(r["start"] for r in results) < min(r["end"] for r in results)


def test_a_coroutine_reports_progress_and_data_to_attachers_and_the_record(gearmand, worker):
    wait_for_workers(gearmand.address, "tests.async_chatty")
    job = submit("tests.async_chatty")
    attacher = AttachThread("tests.async_chatty", job.key)
    attacher.start()
    record = wait_for_status("tests.async_chatty", job.key, Status.COMPLETE)
    assert record.result == {"answer": 42}
    assert (record.progress_numerator, record.progress_denominator) == (2, 2)
    assert record.data == {"partial": "half"}
    events = attacher.result()
    assert events[-1].event == "complete"
    assert events[-1].result == {"answer": 42}


def test_a_failing_coroutine_records_its_error_and_traceback(gearmand, worker):
    wait_for_workers(gearmand.address, "tests.async_fail")
    job = submit("tests.async_fail", ["no luck"])
    record = wait_for_status("tests.async_fail", job.key, Status.FAILED)
    assert record.error == "ValueError: no luck"
    assert record.exception_qualname == "ValueError"
    assert "async_tasks.py" in record.traceback
    assert "in async_fail" in record.traceback
    # The process goes on with the next job.
    after = submit("tests.async_nap", [0.01])
    assert wait_for_status("tests.async_nap", after.key, Status.COMPLETE).worker_pid == worker.pid


def test_cancel_of_a_running_async_job(gearmand, worker, log_path):
    wait_for_workers(gearmand.address, "tests.async_wait")
    job = submit("tests.async_wait", [str(log_path)])
    wait_for_status("tests.async_wait", job.key, Status.RUNNING)
    wait_until(lambda: executions(log_path), what="the task to start")
    attacher = AttachThread("tests.async_wait", job.key)
    attacher.start()
    assert cancel("tests.async_wait", job.key).verdict is Cancel.REQUESTED
    record = wait_for_status("tests.async_wait", job.key, Status.CANCELLED)
    assert record.error == CANCELLED_RUNNING_ERROR
    assert record.cancel_requested_at is not None
    assert executions(log_path)[1:] == ["cleaned-up"]  # cancelled inside the coroutine
    events = attacher.result()
    assert events[-1].event in ("cancelled", "failed")
    assert record.attempts == 1


def test_the_soft_limit_cancels_the_coroutine_which_cleans_up(gearmand, worker, log_path):
    wait_for_workers(gearmand.address, "tests.async_soft")
    job = submit("tests.async_soft", [str(log_path)])
    record = wait_for_status("tests.async_soft", job.key, Status.FAILED)
    assert record.error == "SoftTimeLimitExceeded: soft time limit (0.5s) exceeded"
    assert record.exception_qualname == SoftTimeLimitExceeded.__qualname__
    assert "CancelledError" in record.traceback  # where the coroutine was cancelled
    assert executions(log_path) == ["start", "cleaned-up"]


def test_a_coroutine_that_catches_its_soft_limit_may_return(gearmand, worker, log_path):
    wait_for_workers(gearmand.address, "tests.async_soft_return")
    job = submit("tests.async_soft_return", [str(log_path)])
    record = wait_for_status("tests.async_soft_return", job.key, Status.COMPLETE)
    assert record.result == "stopped"
    assert executions(log_path) == ["cleaned-up"]


def test_the_hard_limit_ends_the_run_and_the_process_goes_on(gearmand, worker, log_path):
    wait_for_workers(gearmand.address, "tests.async_hard")
    job = submit("tests.async_hard", [str(log_path)])
    attacher = AttachThread("tests.async_hard", job.key)
    wait_for_status("tests.async_hard", job.key, Status.RUNNING)
    attacher.start()
    record = wait_for_status("tests.async_hard", job.key, Status.FAILED)
    assert record.error.startswith("TimeLimitExceeded: hard time limit (1s) exceeded")
    assert record.attempts == 1
    events = attacher.result()
    assert events[-1].event == "failed"
    # The coroutine ignored its cancellation; the process runs other jobs meanwhile.
    assert "ignored-cancel" in executions(log_path)
    after = submit("tests.async_nap", [0.01])
    done = wait_for_status("tests.async_nap", after.key, Status.COMPLETE)
    assert done.worker_pid == worker.pid == record.worker_pid
    assert Job.objects.get(pk=job.pk).status == Status.FAILED  # its late return changes nothing


def test_a_killed_worker_mid_async_run_is_recovered_and_run_again_once(
    gearmand, worker_factory, log_path
):
    worker = worker_factory([gearmand], "--concurrency", "2")
    wait_for_workers(gearmand.address, "tests.async_wait", 2)
    job = submit("tests.async_wait", [str(log_path), 1.5])
    running = wait_for_status("tests.async_wait", job.key, Status.RUNNING)
    wait_until(lambda: executions(log_path), what="the task to start")
    assert running.worker_pid != worker.pid  # a child of the supervisor
    os.kill(running.worker_pid, signal.SIGKILL)
    record = wait_for_status("tests.async_wait", job.key, Status.COMPLETE, 60)
    assert record.result == "slept"
    assert record.attempts == 2
    assert record.worker_pid != running.worker_pid
    starts = executions(log_path)
    assert len(starts) == 2  # the killed run, and one more
    assert starts[0].split("-")[1] == str(running.worker_pid)


def test_concurrency_limit_of_an_async_task_holds(gearmand, worker):
    wait_for_workers(gearmand.address, "tests.async_paired")
    jobs = [submit("tests.async_paired", [0.4]) for _ in range(6)]
    results = [
        wait_for_status("tests.async_paired", j.key, Status.COMPLETE, 60).result for j in jobs
    ]
    intervals = [(r["start"], r["end"]) for r in results]
    assert _overlap(intervals) == 2  # never three; two lanes did run together


def test_rate_limit_of_an_async_task_holds(gearmand, worker):
    wait_for_workers(gearmand.address, "tests.async_metered")
    jobs = [submit("tests.async_metered") for _ in range(8)]
    records = [wait_for_status("tests.async_metered", j.key, Status.COMPLETE, 60) for j in jobs]
    assert [r.attempts for r in records] == [1] * 8
    starts = sorted(r.result for r in records)
    # A lower bound only, as for sync tasks (tests/test_ratelimits.py): 4/s means 8
    # starts span at least (8 - 1 - 2) * 0.25 s, allowing the early starts of a right
    # held before the jobs came and of the rate row's allowance.
    assert starts[-1] - starts[0] >= (len(starts) - 1 - 2) * 0.25 - 0.01


def test_sync_and_async_tasks_share_a_worker_process(gearmand, worker):
    wait_for_workers(gearmand.address, "tests.async_nap")
    wait_for_workers(gearmand.address, "tests.add")
    slow = submit("tests.async_nap", [1.0])
    wait_for_status("tests.async_nap", slow.key, Status.RUNNING)
    quick = submit("tests.add", [2, 3])
    # The sync job runs while the async one awaits, in the same process.
    added = wait_for_status("tests.add", quick.key, Status.COMPLETE)
    assert added.result == 5
    assert Job.objects.get(pk=slow.pk).status == Status.RUNNING
    napped = wait_for_status("tests.async_nap", slow.key, Status.COMPLETE)
    assert added.worker_pid == napped.worker_pid == worker.pid


def test_a_trigger_during_an_async_run_hands_over_to_one_follow_up(
    gearmand, worker, log_path, tmp_path
):
    gate = tmp_path / "gate"
    wait_for_workers(gearmand.address, "tests.async_rebuild")
    submit("tests.async_rebuild", [str(log_path)], {"gate": str(gate), "tag": "a"}, key="aix")
    wait_for_status("tests.async_rebuild", "aix", Status.RUNNING)
    submit("tests.async_rebuild", [str(log_path)], {"tag": "b"}, key="aix")
    submit("tests.async_rebuild", [str(log_path)], {"tag": "c"}, key="aix")  # joins "b"
    assert Job.objects.get(key="aix").next_reason == OnConflict.FOLLOW_UP
    gate.touch()
    wait_until(lambda: Job.objects.get(key="aix").run_number == 2, what="the follow-up")
    record = wait_for_status("tests.async_rebuild", "aix", Status.COMPLETE)
    assert (record.run_number, record.run_reason) == (2, RunReason.FOLLOW_UP)
    assert record.result == {"tag": "b"}
    assert record.previous_result == {"tag": "a"}
    assert executions(log_path) == ["start-a", "start-b"]


def test_an_async_run_renews_its_lease_so_a_second_copy_never_runs_it_again(
    gearmand_factory, worker_factory, settings, monkeypatch, log_path
):
    a, b = gearmand_factory(), gearmand_factory()
    settings.GEARATTACH = {**settings.GEARATTACH, "SERVERS": [a.address, b.address]}
    monkeypatch.setenv("GEARATTACH_LEASE", "1.5")  # the claim must be renewed to hold
    worker_factory([a, b], "--concurrency", "2")
    wait_for_workers(a.address, "tests.async_wait", 2)
    wait_for_workers(b.address, "tests.async_wait", 2)
    key = key_homed_on(a.address, "async-lease", "tests.async_wait")
    submit("tests.async_wait", [str(log_path), 4.0], key=key)
    running = wait_for_status("tests.async_wait", key, Status.RUNNING)
    assert running.server == a.address
    second_copy(b.address, "tests.async_wait", key)  # as a reviving attacher sends
    first_lease = running.started_at + timedelta(seconds=1.5)

    def renewed() -> bool:
        now = Job.objects.get(pk=running.pk)
        return now.status == Status.RUNNING and now.lease_until > first_lease

    wait_until(renewed, what="the lease renewed while the coroutine awaits")
    record = wait_for_status("tests.async_wait", key, Status.COMPLETE, 30)
    assert record.result == "slept"
    assert record.attempts == 1
    assert len(executions(log_path)) == 1  # the second copy waited for the claim


def test_a_coroutine_that_blocks_the_loop_is_stopped_only_at_its_next_await(gearmand, worker):
    wait_for_workers(gearmand.address, "tests.async_blocking")
    blocking = submit("tests.async_blocking", [1.5])
    wait_for_status("tests.async_blocking", blocking.key, Status.RUNNING)
    other = submit("tests.async_nap", [0.01])
    record = wait_for_status("tests.async_blocking", blocking.key, Status.FAILED)
    assert record.error.startswith("TimeLimitExceeded: hard time limit (1s) exceeded")
    napped = wait_for_status("tests.async_nap", other.key, Status.COMPLETE)
    # The other job could not start while the loop was blocked: it started after the
    # blocking coroutine had run for 1.5 s (its record says when it started).
    assert napped.started_at >= record.started_at + timedelta(seconds=1.4)


def test_a_sync_hard_limit_ends_the_process_and_its_async_runs_run_again(
    gearmand, worker_factory, monkeypatch, log_path, tmp_path
):
    monkeypatch.setenv("GEARATTACH_LEASE", "2")  # the killed runs' claims expire soon
    worker = worker_factory([gearmand])
    wait_for_workers(gearmand.address, "tests.async_wait")
    wait_for_workers(gearmand.address, "tests.spin_hard")
    napping = submit("tests.async_wait", [str(log_path), 3.0])
    wait_for_status("tests.async_wait", napping.key, Status.RUNNING)
    spin = submit("tests.spin_hard", [str(tmp_path / "spin.log")])
    failed = wait_for_status("tests.spin_hard", spin.key, Status.FAILED)
    assert failed.error.startswith("TimeLimitExceeded: hard time limit (1s) exceeded")
    record = wait_for_status("tests.async_wait", napping.key, Status.COMPLETE, 60)
    assert record.result == "slept"
    assert record.attempts == 2  # its first run ended with the process
    assert len([line for line in executions(log_path) if line.startswith("start")]) == 2
    assert record.worker_pid == worker.pid  # the process started itself anew (exec)


def test_async_concurrency_caps_the_jobs_in_flight_of_a_process(gearmand, worker_factory):
    worker_factory([gearmand], "--async-concurrency", "3")
    wait_for_workers(gearmand.address, "tests.async_nap")
    jobs = [submit("tests.async_nap", [0.3]) for _ in range(9)]
    results = [wait_for_status("tests.async_nap", j.key, Status.COMPLETE, 60).result for j in jobs]
    assert _overlap([(r["start"], r["end"]) for r in results]) == 3


def test_the_gearworker_option_refuses_a_bad_async_concurrency(gearmand):
    from django.core.management import call_command
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="--async-concurrency: must be at least 1"):
        call_command("gearworker", "--async-concurrency", "0")


def test_a_coroutine_streams_to_attachers_and_the_record(gearmand, worker):
    """Issue 22: an async task's chunks (``job.astream`` and ``job.stream`` alike) reach
    attachers live and in order, and are kept with the record: a reload after the end
    replays them whole."""
    wait_for_workers(gearmand.address, "tests.async_streamer")
    job = submit("tests.async_streamer", [200])
    attacher = AttachThread("tests.async_streamer", job.key)
    attacher.start()
    record = wait_for_status("tests.async_streamer", job.key, Status.COMPLETE)
    assert record.result == {"chunks": 200}
    events = attacher.result()
    chunks = [e for e in events if e.event == "chunk"]
    assert [(c.run, c.seq, c.data) for c in chunks] == [(1, n, f"a{n} ") for n in range(1, 201)]
    assert events[-1].event == "complete"
    replay = streams.read(job)
    assert [c.data for c in replay.chunks] == [f"a{n} " for n in range(1, 201)]
    assert record.stream_seq == 200


def test_an_async_task_streams_in_immediate_mode(settings):
    """Immediate mode runs the coroutine in the submitting thread's loop: its chunks are
    written by a thread (Django calls no database from a loop)."""
    settings.GEARATTACH = {**settings.GEARATTACH, "IMMEDIATE": True}
    job = submit("tests.async_streamer", [30, 0])
    assert Job.objects.get(pk=job.pk).status == Status.COMPLETE
    assert [c.data for c in streams.read(job).chunks] == [f"a{n} " for n in range(1, 31)]
