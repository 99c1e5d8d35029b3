"""streams.py: positions, the signed packet format, durable reads (no gearmand needed)."""

from __future__ import annotations

import logging

import pytest

from django_gearattach import streams
from django_gearattach.models import Job, JobChunk
from django_gearattach.streams import Chunk, decode_packet, encode_packet


@pytest.mark.parametrize(
    ("text", "expected"), [("0:0", (0, 0)), ("2:17", (2, 17)), (" 3:4 ", (3, 4))]
)
def test_a_position_is_run_colon_seq(text, expected):
    assert streams.parse_position(text) == expected
    assert streams.position(text) == expected


@pytest.mark.parametrize(
    "text",
    ["", "5", "a:b", "1:", ":1", "1:2:3", "-1:3", "1:-3", "1.5:2", "1:2\n9", "\u0661:\u0662"],
)
def test_a_malformed_position_is_refused_clearly(text):
    with pytest.raises(ValueError, match="not a stream position"):
        streams.parse_position(text)


@pytest.mark.parametrize("text", ["1:99999999999", "99999999999:1", "1:4294967296"])
def test_a_huge_position_is_refused(text):
    with pytest.raises(ValueError, match=r"not a stream position|between 0 and"):
        streams.parse_position(text)


def test_after_arguments_an_int_a_tuple_or_none():
    assert streams.position(None) is None
    assert streams.position(7) == (None, 7)
    assert streams.position((2, 3)) == (2, 3)
    for bad in (-1, (1, -2), (1, 2, 3), True, 2**40, 1.5):
        with pytest.raises(ValueError, match=r"stream (seq|run|position)"):
            streams.position(bad)  # type: ignore[arg-type]


def test_a_packet_verifies_for_its_own_job_only():
    packet = encode_packet("tests.streamer", "k1", 2, 5, b'"hello "')
    assert streams.is_stream_packet(packet)
    assert decode_packet("tests.streamer", "k1", packet) == Chunk(2, 5, "hello ")
    # Bound to function, key, run and seq: moved to another, it does not verify.
    assert decode_packet("tests.streamer", "k2", packet) is None
    assert decode_packet("tests.other", "k1", packet) is None
    moved = packet.replace(b"2 5 ", b"2 6 ", 1)
    assert decode_packet("tests.streamer", "k1", moved) is None


def test_a_forged_or_malformed_packet_is_dropped_and_logged(caplog):
    caplog.set_level(logging.WARNING, "django_gearattach.streams")
    forged = streams.PREFIX + b"1 1 " + b"0" * 32 + b' "evil"'
    assert decode_packet("f", "k", forged) is None
    assert decode_packet("f", "k", streams.PREFIX + b"garbage") is None
    assert decode_packet("f", "k", streams.PREFIX + b"1 0 abc x") is None
    assert "does not verify" in caplog.text
    assert "malformed" in caplog.text
    # A data report (JSON) is not a stream packet at all.
    assert not streams.is_stream_packet(b'{"partial": 1}')
    assert decode_packet("f", "k", b'{"partial": 1}') is None


def test_a_packet_signed_with_a_fallback_key_verifies(settings):
    packet = encode_packet("f", "k", 1, 1, b"[1,2]")
    settings.SECRET_KEY, settings.SECRET_KEY_FALLBACKS = "new-key", [settings.SECRET_KEY]
    assert decode_packet("f", "k", packet) == Chunk(1, 1, [1, 2])
    settings.SECRET_KEY_FALLBACKS = []
    assert decode_packet("f", "k", packet) is None


@pytest.mark.django_db
def test_read_returns_the_current_runs_chunks_after_a_position():
    job = Job.objects.create(function="f", key="k", stream_run=2, stream_seq=3)
    JobChunk.objects.bulk_create(
        [JobChunk(job=job, run=1, seq=s, data=f'"old{s}"') for s in (1, 2, 3, 4)]
        + [JobChunk(job=job, run=2, seq=s, data=f'"new{s}"') for s in (1, 2, 3)]
    )
    whole = streams.read(job)
    assert (whole.run, whole.restart) == (2, False)
    assert [c.data for c in whole.chunks] == ["new1", "new2", "new3"]
    assert whole.last == (2, 3)
    assert [c.seq for c in streams.read(job, "2:1").chunks] == [2, 3]
    assert [c.seq for c in streams.read(job, 2).chunks] == [3]
    assert streams.read(job, (2, 3)).chunks == []
    # A holder of the older run must start over: the whole current run, restart.
    old = streams.read(job.pk, "1:4")
    assert old.restart
    assert [c.seq for c in old.chunks] == [1, 2, 3]
    assert streams.read(job, "0:0").chunks == whole.chunks


@pytest.mark.django_db
def test_read_of_a_record_that_never_ran_or_is_gone_is_empty():
    job = Job.objects.create(function="f", key="k")
    assert streams.read(job) == streams.Replay(None, False, [])
    pk = job.pk
    job.delete()
    assert streams.read(pk) == streams.Replay(None, False, [])


@pytest.mark.django_db
def test_chunks_are_deleted_with_their_record():
    from datetime import timedelta

    from django_gearattach.housekeeping import prune

    job = Job.objects.create(function="f", key="k", status="complete", stream_run=1)
    JobChunk.objects.bulk_create([JobChunk(job=job, run=1, seq=s, data="1") for s in (1, 2)])
    Job.objects.filter(pk=job.pk).update(created_at=job.created_at - timedelta(days=2))
    assert prune(timedelta(days=1)) == 1  # records counted, not their chunks
    assert not JobChunk.objects.exists()


def test_the_signature_is_django_salted_hmac_of_the_chunk():
    from django.conf import settings
    from django.utils.crypto import salted_hmac

    message = b"f\0k\x001\x002\0[1]"
    expected = salted_hmac(streams.SALT, message, secret=settings.SECRET_KEY, algorithm="sha256")
    assert streams._mac(settings.SECRET_KEY, "f", "k", 1, 2, b"[1]") == expected.hexdigest()[:32]


@pytest.mark.django_db
def test_an_attacher_given_a_record_without_its_stream_fields_reads_them():
    from django_gearattach.attach_streams import StreamCursor
    from django_gearattach.attachment import JobEvent

    job = Job.objects.create(function="f", key="k", status="complete", stream_run=1, stream_seq=1)
    JobChunk.objects.create(job=job, run=1, seq=1, data='"only"')
    partial = Job.objects.only("function", "key", "status").get(pk=job.pk)
    events = StreamCursor("f", "k", None, JobEvent).from_record(partial)
    assert [e.as_dict() for e in events] == [
        {"event": "chunk", "run": 1, "seq": 1, "data": "only"}
    ]
