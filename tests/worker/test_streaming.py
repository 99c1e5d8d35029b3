"""The worker's side of a stream (worker/streaming.py): batched, claim-conditioned writes."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from django_gearattach import streams, submit
from django_gearattach.exceptions import BadPayload
from django_gearattach.models import Job, JobChunk
from django_gearattach.testing import free_port
from django_gearattach.worker import streaming
from django_gearattach.worker.claim import LOST, Claim

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def immediate(settings):
    settings.GEARATTACH = {
        **settings.GEARATTACH,
        "IMMEDIATE": True,
        "SERVERS": [f"127.0.0.1:{free_port()}"],
    }


@pytest.mark.usefixtures("immediate")
def test_ten_thousand_chunks_cost_at_most_five_hundredths_of_a_statement_each():
    # Immediate mode runs the task in this thread and writes its batches here, so every
    # statement of the run (mark, batches, outcome) is counted. A check of batching,
    # not of speed.
    with CaptureQueriesContext(connection) as queries:
        job = submit("tests.streamer", [10_000])
    statements = [q for q in queries if not q["sql"].startswith(("SAVEPOINT", "RELEASE"))]
    assert len(statements) / 10_000 <= 0.05, len(statements)
    record = Job.objects.get(pk=job.pk)
    assert (record.status, record.stream_run, record.stream_seq) == ("complete", 1, 10_000)
    replay = streams.read(job)
    assert [c.seq for c in replay.chunks] == list(range(1, 10_001))
    assert replay.chunks[-1].data == "w10000 "


@pytest.mark.usefixtures("immediate")
def test_each_run_counts_one_more_stream_run():
    job = submit("tests.streamer", [3])
    assert Job.objects.get(pk=job.pk).stream_run == 1
    again = submit("tests.streamer", [2], key=job.key, on_conflict="follow_up")
    record = Job.objects.get(pk=again.pk)
    assert (record.stream_run, record.stream_seq) == (2, 2)
    assert set(JobChunk.objects.values_list("run", flat=True)) == {2}  # run 1's deleted


def test_a_chunk_that_is_not_json_is_refused():
    with pytest.raises(BadPayload, match="not JSON"):
        streams.encode_data(object())


class _Job:
    function = "tests.streamer"
    handle = b"H:1"

    def __init__(self) -> None:
        self.sent: list[tuple[Any, ...]] = []

    def send(self, command, *args) -> None:
        self.sent.append((command, *args))


def test_a_run_that_lost_its_claim_streams_and_writes_nothing():
    Job.objects.create(
        function="tests.streamer", key="k", status="running", execution="theirs", stream_run=3
    )
    job = _Job()
    claim = Claim(job, "k", "mine")  # type: ignore[arg-type]
    stream = streaming.RunStream(claim, background=False)
    assert stream.append("hello") is False
    assert claim.state == LOST
    assert job.sent == []
    assert not JobChunk.objects.exists()


def test_a_batch_after_the_claim_was_taken_over_writes_nothing_and_ends_the_stream():
    record = Job.objects.create(
        function="tests.streamer", key="k", status="running", execution="mine", stream_run=3
    )
    job = _Job()
    claim = Claim(job, "k", "mine")  # type: ignore[arg-type]
    stream = streaming.RunStream(claim, background=False)
    assert stream.append("one")
    Job.objects.filter(pk=record.pk).update(execution="theirs", stream_run=4)
    stream.close()
    assert claim.state == LOST
    assert not JobChunk.objects.exists()
    assert stream.append("two") is False
    assert len(job.sent) == 1  # only the first chunk left
    assert streams.decode_packet("tests.streamer", "k", job.sent[0][1]) == streams.Chunk(
        3, 1, "one"
    )


def test_a_batch_the_database_refuses_stays_buffered_and_goes_with_the_next(monkeypatch):
    from django.db import OperationalError

    Job.objects.create(
        function="tests.streamer", key="k", status="running", execution="mine", stream_run=1
    )
    claim = Claim(_Job(), "k", "mine")  # type: ignore[arg-type]
    stream = streaming.RunStream(claim, background=False)
    assert stream.append("one")
    real = stream._write
    calls = []

    def refuse_once(batch):
        calls.append(len(batch))
        if len(calls) == 1:
            raise OperationalError("database is locked")
        return real(batch)

    monkeypatch.setattr(stream, "_write", refuse_once)
    with pytest.raises(OperationalError):
        stream._flush()
    assert stream.append("two")
    stream.close()
    assert calls == [1, 2]
    assert [c.data for c in streams.read(Job.objects.get(key="k")).chunks] == ["one", "two"]


def test_an_attacher_gives_up_on_chunks_never_kept_and_says_so(monkeypatch, caplog):
    from django_gearattach import attach_streams
    from django_gearattach.attachment import JobEvent

    monkeypatch.setattr(attach_streams, "GAP_PATIENCE", 0.2)
    record = Job.objects.create(function="f", key="k", status="running", stream_run=1)
    cursor = attach_streams.StreamCursor("f", "k", None, JobEvent)
    assert cursor.from_record(record) == []
    events = cursor.live(streams.encode_packet("f", "k", 1, 3, b'"three"'))
    assert [(e.event, e.seq, e.data) for e in events] == [("chunk", 3, "three")]
    assert "were not kept within" in caplog.text
