"""Streams through attach/aattach, against real gearmand and real gearworker processes:
live in order, a late join, a replay after the end, a restart after a killed worker, a
forged chunk."""

from __future__ import annotations

import logging
import os
import signal

import pytest

from django_gearattach import aattach, attach, streams, submit
from django_gearattach.models import Job, JobChunk, Status
from django_gearattach.testing import wait_for_workers
from tests.conftest import executions
from tests.dbthreads import closes_thread_connections  # noqa: F401
from tests.helpers import AttachThread, foreground_clients, wait_for_status, wait_until
from tests.rawgearman import ForgingPeer

pytestmark = pytest.mark.django_db(transaction=True)


def words(events, run=None):
    return [e.data for e in events if e.event == "chunk" and (run is None or e.run == run)]


def expected(first, last):
    return [f"w{n} " for n in range(first, last + 1)]


def test_attachers_get_every_chunk_live_in_order_then_the_outcome(worker):
    job = submit("tests.streamer", [1500])
    events = list(attach("tests.streamer", job.key, timeout=30))
    chunks = [e for e in events if e.event == "chunk"]
    assert [(c.run, c.seq) for c in chunks] == [(1, n) for n in range(1, 1501)]
    assert words(events) == expected(1, 1500)
    assert events[-1].as_dict() == {"event": "complete", "result": {"chunks": 1500}}
    assert chunks[0].as_dict() == {"event": "chunk", "run": 1, "seq": 1, "data": "w1 "}
    assert Job.objects.get(pk=job.pk).stream_seq == 1500


def test_a_late_attacher_replays_then_follows_live_with_no_gap_or_duplicate(
    gearmand, worker, tmp_path
):
    gate = tmp_path / "gate"
    job = submit("tests.streamer", [300], {"gate": str(gate), "at": 120})
    wait_until(lambda: Job.objects.get(pk=job.pk).stream_seq >= 120, what="120 chunks kept")
    whole = AttachThread("tests.streamer", job.key)
    late = AttachThread("tests.streamer", job.key, after=100)
    resumed = AttachThread("tests.streamer", job.key, after="1:110")
    for thread in (whole, late, resumed):
        thread.start()
    wait_until(lambda: foreground_clients(gearmand.address, job.key) == 3, what="3 attachers")
    gate.touch()
    assert words(whole.result()) == expected(1, 300)
    assert words(late.result()) == expected(101, 300)
    assert words(resumed.result()) == expected(111, 300)
    assert all(e.event != "restart" for e in late.result())


def test_attach_after_the_end_replays_the_whole_stream_and_runs_nothing(worker, log_path):
    job = submit("tests.streamer", [200], {"log_path": str(log_path)})
    list(attach("tests.streamer", job.key, timeout=30))
    again = list(attach("tests.streamer", job.key, timeout=30))
    assert words(again) == expected(1, 200)
    assert again[-1].event == "complete"
    assert words(list(attach("tests.streamer", job.key, after="1:150"))) == expected(151, 200)
    assert list(attach("tests.streamer", job.key, after="1:200")) == [again[-1]]
    assert len(executions(log_path)) == 1


@pytest.mark.usefixtures("closes_thread_connections")
async def test_aattach_replays_and_follows_too(worker, tmp_path):
    from asgiref.sync import sync_to_async

    gate = tmp_path / "gate"
    job = await sync_to_async(submit)("tests.streamer", [150], {"gate": str(gate), "at": 50})

    def kept() -> bool:
        return Job.objects.get(pk=job.pk).stream_seq >= 50

    await sync_to_async(wait_until)(kept, what="50 chunks kept")
    events = []
    async for event in aattach("tests.streamer", job.key, timeout=30, after="1:20"):
        events.append(event)
        if event.event == "chunk" and event.seq == 50:
            gate.touch()
    assert words(events) == expected(21, 150)
    assert events[-1].event == "complete"
    after_end = [e async for e in aattach("tests.streamer", job.key, after=140)]
    assert words(after_end) == expected(141, 150)


def test_a_rerun_after_a_killed_worker_is_a_restart_never_a_splice(
    gearmand, worker_factory, log_path, tmp_path
):
    gate = tmp_path / "gate"
    worker_factory([gearmand])
    worker_factory([gearmand])
    wait_for_workers(gearmand.address, "tests.streamer", 2)
    arguments = {"gate": str(gate), "at": 40, "log_path": str(log_path)}
    job = submit("tests.streamer", [120], arguments)
    wait_for_status("tests.streamer", job.key, Status.RUNNING)
    attacher = AttachThread("tests.streamer", job.key)
    attacher.start()
    wait_until(lambda: len(words(attacher.events)) == 40, what="40 chunks of the first run")
    os.kill(int(executions(log_path)[0]), signal.SIGKILL)
    gate.touch()  # the second run goes straight through
    events = attacher.result()
    kinds = [e.event for e in events]
    restart = kinds.index("restart")
    assert events[restart].as_dict() == {"event": "restart", "run": 2}
    assert words(events[:restart], run=1) == expected(1, 40)
    assert words(events[restart:]) == words(events[restart:], run=2) == expected(1, 120)
    assert kinds[-1] == "complete"
    # The replay after the end is the second run's alone; the first's chunks are gone.
    replay = streams.read(job)
    assert (replay.run, len(replay.chunks)) == (2, 120)
    assert not JobChunk.objects.filter(job_id=job.pk, run=1).exists()
    held = list(attach("tests.streamer", job.key, after="1:40"))
    assert held[0].as_dict() == {"event": "restart", "run": 2}
    assert words(held) == expected(1, 120)


def test_a_forged_chunk_from_another_host_is_dropped_and_never_shown(
    gearmand, worker_factory, caplog
):
    caplog.set_level(logging.WARNING, "django_gearattach.streams")
    peer = ForgingPeer(gearmand.address, "tests.streamer")
    job = submit("tests.streamer", [5])
    handle, unique, _ = peer.take()
    attacher = AttachThread("tests.streamer", job.key)
    attacher.start()
    wait_until(lambda: foreground_clients(gearmand.address, job.key) == 1, what="the attacher")
    good_format = streams.PREFIX + b"1 1 " + b"0" * 32 + b' "evil"'
    other_key = streams._mac("another-site", "tests.streamer", job.key, 1, 1, b'"evil"')
    signed_elsewhere = streams.PREFIX + b"1 1 " + other_key.encode() + b' "evil"'
    for payload in (good_format, signed_elsewhere, streams.PREFIX + b"nonsense"):
        peer._send(28, handle, payload)  # WORK_DATA
    peer.fail(handle)  # the record is not finished: the attacher follows the job on
    peer.close()
    worker_factory([gearmand])  # revives the job from its record and runs it
    events = attacher.result()
    assert words(events) == expected(1, 5)
    assert "evil" not in repr(events)
    assert events[-1].event == "complete"
    assert caplog.text.count("does not verify") >= 2
    assert unique == job.key.encode()
