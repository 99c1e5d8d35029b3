"""The resumer's rules, on a feed of its own (no gearmand: the database read is replaced).

The stream end to end, with gearmand, workers, the ASGI server and a browser, is tested
in test_stream_endpoints.py and test_stream_browser.py; here each rule of
:mod:`django_gearattach.web.replay` is named and checked on its own.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from django_gearattach import streams
from django_gearattach.web import replay
from django_gearattach.web.messages import Message, chunk_message, restart_message
from django_gearattach.web.replay import Resumer, Tail


class Record:
    pk = "pk"


class Feed:
    """What a resumer uses of a :class:`~django_gearattach.web.hub.JobFeed`."""

    function = "f"
    key = "k"

    def __init__(self, start: tuple[int, int] = (0, 0)) -> None:
        self.tail = Tail(start)
        self.record = Record()
        self.seq = 0

    def encode(self, payload: dict[str, Any]) -> Message:
        return Message(payload, json.dumps(payload), self.seq)

    def restart(self, run: int) -> Message:
        return self.encode(restart_message(run))

    def chunk(self, run: int, seq: int) -> Message:
        self.seq += 1
        message = self.encode(chunk_message(run, seq, f"{run}.{seq} "))
        self.tail.add(message)
        return message


def shown(messages: list[Message]) -> list[str]:
    out = []
    for m in messages:
        if m.type == "chunk":
            out.append(f"{m.payload['run']}:{m.payload['seq']}")
        else:
            out.append(m.type if m.type != "restart" else f"restart {m.payload['run']}")
    return out


@pytest.fixture
def durable(monkeypatch: pytest.MonkeyPatch) -> dict[int, list[int]]:
    """The record's chunks per run: what ``streams.read`` would find (current run: max)."""
    kept: dict[int, list[int]] = {}

    async def read(item: tuple[Any, tuple[int, int]]) -> streams.Replay:
        run = max(kept) if kept else None
        if run is None:
            return streams.Replay(None, False)
        held_run, held_seq = item[1]
        restart = held_run not in (0, run)
        start = 0 if restart or held_run == 0 else held_seq
        chunks = [streams.Chunk(run, s, f"{run}.{s} ") for s in kept[run] if s > start]
        return streams.Replay(run, restart, chunks)

    monkeypatch.setattr(replay, "_read", read)
    monkeypatch.setattr(replay, "READ_PAUSE", 0.001)
    return kept


def test_the_tail_keeps_a_bounded_number_of_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(replay, "TAIL_CHUNKS", 10)
    feed = Feed()
    for seq in range(1, 101):
        feed.chunk(1, seq)
    assert len(feed.tail.chunks) == 10
    assert feed.tail.base == (1, 90)
    assert feed.tail.after((1, 95)) is not None
    assert feed.tail.after((1, 50)) is None  # older than kept: the database must say


def test_the_tail_is_bounded_in_bytes_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(replay, "TAIL_BYTES", 1000)
    feed = Feed()
    for seq in range(1, 1001):
        feed.chunk(1, seq)
    assert feed.tail.size <= 1000
    assert sum(len(m.text) for m in feed.tail.chunks) == feed.tail.size


async def test_a_newcomer_the_tail_covers_gets_the_chunks_after_its_position() -> None:
    feed = Feed()
    for seq in range(1, 6):
        feed.chunk(1, seq)
    got: list[Message] = []
    resumer = Resumer(feed, got.append, (1, 2))  # type: ignore[arg-type]
    resumer.start([])
    resumer(feed.chunk(1, 6))
    assert shown(got) == ["1:3", "1:4", "1:5", "1:6"]


async def test_a_chunk_held_already_is_never_sent_twice() -> None:
    feed = Feed()
    got: list[Message] = []
    resumer = Resumer(feed, got.append, (1, 3))  # type: ignore[arg-type]
    resumer.start([])
    for seq in (1, 2, 3, 4, 4, 5):
        resumer(feed.encode(chunk_message(1, seq, "")))
    assert shown(got) == ["1:4", "1:5"]


async def test_a_newcomer_older_than_the_tail_reads_the_database_then_the_tail(
    monkeypatch: pytest.MonkeyPatch, durable: dict[int, list[int]]
) -> None:
    monkeypatch.setattr(replay, "TAIL_CHUNKS", 5)
    feed = Feed()
    for seq in range(1, 21):
        feed.chunk(1, seq)
    durable[1] = list(range(1, 17))  # the last 4 are sent but not written yet
    got: list[Message] = []
    final = feed.encode({"type": "complete", "result": None, "html": None})
    resumer = Resumer(feed, got.append, (1, 0))  # type: ignore[arg-type]
    resumer.start([final])
    resumer(feed.chunk(1, 21))  # live, while the database is read: held
    assert got == []
    await asyncio.sleep(0.05)
    assert shown(got) == [f"1:{s}" for s in range(1, 22)] + ["complete"]


async def test_chunks_not_written_yet_are_read_again_until_they_are(
    monkeypatch: pytest.MonkeyPatch, durable: dict[int, list[int]]
) -> None:
    monkeypatch.setattr(replay, "TAIL_CHUNKS", 2)
    feed = Feed()
    for seq in range(1, 11):
        feed.chunk(1, seq)  # the tail keeps 9 and 10
    durable[1] = list(range(1, 6))  # 6, 7 and 8 are in neither, yet
    got: list[Message] = []
    resumer = Resumer(feed, got.append)  # type: ignore[arg-type]
    resumer.start([])
    await asyncio.sleep(0.01)
    assert shown(got) == [f"1:{s}" for s in range(1, 6)]  # no gap: 9 and 10 wait
    durable[1] = list(range(1, 11))
    await asyncio.sleep(0.05)
    assert shown(got) == [f"1:{s}" for s in range(1, 11)]


async def test_chunks_missing_for_good_end_the_subscription(
    monkeypatch: pytest.MonkeyPatch, durable: dict[int, list[int]]
) -> None:
    monkeypatch.setattr(replay, "TAIL_CHUNKS", 2)
    monkeypatch.setattr(replay, "READ_ATTEMPTS", 3)
    feed = Feed()
    for seq in range(1, 11):
        feed.chunk(1, seq)
    durable[1] = [1, 2]
    got: list[Message] = []
    resumer = Resumer(feed, got.append)  # type: ignore[arg-type]
    resumer.start([])
    await asyncio.sleep(0.05)
    assert shown(got) == ["1:1", "1:2", "broken"]  # the browser reconnects from 1:2
    assert got[-1].final


async def test_a_newer_run_is_preceded_by_a_restart_for_a_holder_of_an_older_one() -> None:
    feed = Feed()
    got: list[Message] = []
    resumer = Resumer(feed, got.append, (1, 7))  # type: ignore[arg-type]
    resumer.start([])
    resumer(feed.chunk(2, 1))
    resumer(feed.chunk(2, 2))
    resumer(feed.chunk(1, 8))  # a late packet of the dead run: never spliced in
    assert shown(got) == ["restart 2", "2:1", "2:2"]


async def test_a_restart_is_relayed_once_and_the_new_run_follows() -> None:
    feed = Feed()
    got: list[Message] = []
    resumer = Resumer(feed, got.append, (1, 3))  # type: ignore[arg-type]
    resumer.start([])
    resumer(feed.restart(2))
    resumer(feed.chunk(2, 1))
    resumer(feed.restart(2))
    assert shown(got) == ["restart 2", "2:1"]


async def test_a_holder_of_a_replaced_run_reads_the_new_one_from_its_start(
    durable: dict[int, list[int]],
) -> None:
    feed = Feed((3, 40))  # a feed that started after the newcomer's run
    durable[3] = list(range(1, 41))
    got: list[Message] = []
    resumer = Resumer(feed, got.append, (2, 9))  # type: ignore[arg-type]
    resumer.start([])
    await asyncio.sleep(0.02)
    assert shown(got) == ["restart 3", *(f"3:{s}" for s in range(1, 41))]


async def test_a_summary_subscriber_gets_no_chunks_but_the_outcome() -> None:
    feed = Feed()
    for seq in range(1, 4):
        feed.chunk(1, seq)
    got: list[Message] = []
    final = feed.encode({"type": "complete", "result": None, "html": None})
    resumer = Resumer(feed, got.append, summarised=True)  # type: ignore[arg-type]
    resumer.start([final])
    resumer(feed.chunk(1, 4))
    resumer(feed.restart(2))
    assert shown(got) == ["complete"]
