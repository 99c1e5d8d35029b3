"""A job's stream over SSE, long-poll and websocket: positions, resuming, tokens.

Real gearmand and a real worker process run ``tests.streamer``; the endpoints are
called through Django's async test client and Channels' communicator (the real ASGI
server and a real browser are in test_stream_browser.py).
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.test import AsyncClient

from django_gearattach import submit
from django_gearattach.models import Job, JobChunk, Status
from django_gearattach.web.consumers import CLOSE_BAD_REQUEST
from django_gearattach.web.tokens import make_token
from tests.asgi import application
from tests.helpers import one_by_one, sse_events, wait_for_status, wait_until

pytest_plugins = ["tests.webfixtures"]

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("hub")]

MALFORMED = ["x", "1", "1:", ":1", "-1:2", "1:2:3", "1.5:2", "9" * 20 + ":1", "1:99999999999"]


def url(token: str, endpoint: str) -> str:
    return f"/gearattach/jobs/{token}/{endpoint}/"


def token_of(job: Job, summary: bool = False) -> str:
    return make_token(job.function, job.key, None, summary=summary)


async def streamed(count: int, **kwargs: Any) -> Job:
    """A ``tests.streamer`` job that streamed ``count`` chunks and completed."""
    job = await sync_to_async(submit)("tests.streamer", [count], kwargs)
    return await sync_to_async(wait_for_status)(job.function, job.key, Status.COMPLETE)


async def sse(
    client: AsyncClient, token: str, headers: dict[str, str] | None = None, **query: str
) -> list[dict[str, str]]:
    response = await client.get(url(token, "events"), query, headers=headers or {})
    assert response.status_code == 200, response.content

    async def read() -> str:
        return "".join([c.decode() async for c in response.streaming_content])  # type: ignore[attr-defined]

    return sse_events(await asyncio.wait_for(read(), 30))


def chunk_ids(events: list[dict[str, str]]) -> list[str]:
    return [e["id"] for e in events if e["event"] == "chunk"]


# -- malformed input --------------------------------------------------------------------
@pytest.mark.parametrize("position", MALFORMED)
async def test_a_malformed_position_is_400_never_a_stream(
    async_client: AsyncClient, position: str
) -> None:
    job = await Job.objects.acreate(function="tests.streamer", key="k", status=Status.COMPLETE)
    token = token_of(job)
    for response in (
        await async_client.get(url(token, "events"), {"after": position}),
        await async_client.get(url(token, "events"), headers={"Last-Event-ID": position}),
        await async_client.get(url(token, "poll"), {"after": position, "timeout": "0"}),
    ):
        assert response.status_code == 400
        assert "R:N" in response.json()["error"]


async def test_an_unknown_sse_format_is_400(async_client: AsyncClient) -> None:
    job = await Job.objects.acreate(function="tests.streamer", key="k", status=Status.COMPLETE)
    response = await async_client.get(url(token_of(job), "events"), {"format": "xml"})
    assert response.status_code == 400
    assert "format" in response.json()["error"]


@pytest.mark.parametrize("position", ["x", "1:2:3", "%FF"])
async def test_a_malformed_websocket_position_closes_with_4400(position: str) -> None:
    job = await Job.objects.acreate(function="tests.streamer", key="k", status=Status.COMPLETE)
    communicator = WebsocketCommunicator(
        application, f"/ws/gearattach/{token_of(job)}/?after={position}"
    )
    connected, _ = await communicator.connect(timeout=5)
    assert connected
    error = json.loads(await communicator.receive_from(5))
    assert error["type"] == "error"
    assert "R:N" in error["error"]
    output = await communicator.receive_output(5)
    assert output == {"type": "websocket.close", "code": CLOSE_BAD_REQUEST}
    await communicator.disconnect()


# -- SSE --------------------------------------------------------------------------------
async def test_sse_sends_every_chunk_with_its_position_then_the_outcome(
    async_client: AsyncClient, cluster: Any
) -> None:
    job = await streamed(30)
    events = await sse(async_client, token_of(job))
    run = job.stream_run
    assert chunk_ids(events) == [f"{run}:{n}" for n in range(1, 31)]
    texts = [json.loads(e["data"]) for e in events if e["event"] == "chunk"]
    assert texts[0] == {"type": "chunk", "run": run, "seq": 1, "data": "w1 "}
    assert [e["event"] for e in events[-2:]] == ["message", "end"]
    assert json.loads(events[-2]["data"])["type"] == "complete"


async def test_sse_resumes_after_last_event_id_which_wins_over_after(
    async_client: AsyncClient, cluster: Any
) -> None:
    job = await streamed(30)
    run, token = job.stream_run, token_of(job)
    resumed = await sse(async_client, token, {"Last-Event-ID": f"{run}:20"})
    assert chunk_ids(resumed) == [f"{run}:{n}" for n in range(21, 31)]
    after = await sse(async_client, token, after=f"{run}:10")
    assert chunk_ids(after) == [f"{run}:{n}" for n in range(11, 31)]
    both = await sse(async_client, token, {"Last-Event-ID": f"{run}:25"}, after=f"{run}:10")
    assert chunk_ids(both) == [f"{run}:{n}" for n in range(26, 31)]


async def kept(*chunks: Any, run: int = 1) -> Job:
    """A finished record keeping ``chunks`` (of run ``run``) as a worker writes them."""
    job = await Job.objects.acreate(
        function="tests.streamer",
        key="kept",
        status=Status.COMPLETE,
        result=None,
        stream_run=run,
        stream_seq=len(chunks),
    )
    for seq, data in enumerate(chunks, 1):
        await JobChunk.objects.acreate(job=job, run=run, seq=seq, data=json.dumps(data))
    return job


async def test_a_position_of_an_older_run_gets_a_restart_then_the_new_run(
    async_client: AsyncClient,
) -> None:
    job = await kept("a", "b", run=3)
    for position in ("2:9", "1:1"):
        events = await sse(async_client, token_of(job), after=position)
        assert [(e["event"], e.get("id")) for e in events[:3]] == [
            ("restart", "3:0"),
            ("chunk", "3:1"),
            ("chunk", "3:2"),
        ]
        assert json.loads(events[0]["data"]) == {"type": "restart", "run": 3}


async def test_sse_html_format_escapes_each_chunk_for_htmx(async_client: AsyncClient) -> None:
    job = await kept("<b>bold</b> & more", "two\nlines", {"n": 1})
    events = await sse(async_client, token_of(job), format="html")
    assert [(e["id"], e["data"]) for e in events if e["event"] == "chunk"] == [
        ("1:1", "&lt;b&gt;bold&lt;/b&gt; &amp; more"),
        ("1:2", "two\nlines"),
        ("1:3", "{&quot;n&quot;: 1}"),
    ]
    json_events = await sse(async_client, token_of(job))
    assert [json.loads(e["data"])["data"] for e in json_events if e["event"] == "chunk"] == [
        "<b>bold</b> & more",
        "two\nlines",
        {"n": 1},
    ]


async def test_live_chunks_reach_two_attachers_and_a_late_one_without_gap_or_repeat(
    async_client: AsyncClient, cluster: Any, gate: Path
) -> None:
    job = await sync_to_async(submit)(
        "tests.streamer", [300], {"gate": str(gate), "at": 100, "pause": 0.002}
    )
    token = token_of(job)
    first = asyncio.create_task(sse(async_client, token))
    second = asyncio.create_task(sse(async_client, token))

    def written() -> bool:
        record = Job.objects.get(pk=job.pk)
        return record.stream_seq >= 100

    await sync_to_async(wait_until)(written, timeout=20)
    run = (await Job.objects.aget(pk=job.pk)).stream_run
    gate.touch()
    await asyncio.sleep(0.1)
    late = asyncio.create_task(sse(async_client, token, after=f"{run}:50"))
    every = [f"{run}:{n}" for n in range(1, 301)]
    assert chunk_ids(await first) == every
    assert chunk_ids(await second) == every
    assert chunk_ids(await late) == every[50:]


# -- long-poll and websocket --------------------------------------------------------------
async def test_long_poll_returns_the_chunks_after_its_position(
    async_client: AsyncClient, cluster: Any
) -> None:
    job = await streamed(12)
    run = job.stream_run
    response = await async_client.get(
        url(token_of(job), "poll"), {"after": f"{run}:9", "timeout": "5"}
    )
    messages = response.json()["messages"]
    assert [(m["type"], m.get("seq")) for m in messages] == [
        ("chunk", 10),
        ("chunk", 11),
        ("chunk", 12),
        ("complete", None),
    ]


async def test_a_websocket_resumes_after_its_position(cluster: Any) -> None:
    job = await streamed(12)
    run = job.stream_run
    communicator = WebsocketCommunicator(
        application, f"/ws/gearattach/{token_of(job)}/?after={run}:7"
    )
    assert (await communicator.connect(timeout=5))[0]
    received = []
    while True:
        output = await communicator.receive_output(10)
        if output["type"] == "websocket.close":
            break
        received.append(json.loads(output["text"]))
    assert len(received) < 6  # the replay's chunks share frames
    received = one_by_one(received)
    assert [m.get("seq") for m in received] == [8, 9, 10, 11, 12, None]
    assert received[-1]["type"] == "complete"


# -- tokens -------------------------------------------------------------------------------
async def test_a_summary_token_follows_the_job_but_gets_no_chunks(
    async_client: AsyncClient, cluster: Any
) -> None:
    job = await streamed(5)
    token = token_of(job, summary=True)
    events = await sse(async_client, token)
    assert [e["event"] for e in events] == ["message", "end"]
    assert json.loads(events[0]["data"])["type"] == "complete"
    response = await async_client.get(url(token, "poll"), {"timeout": "5"})
    assert [m["type"] for m in response.json()["messages"]] == ["complete"]
    communicator = WebsocketCommunicator(application, f"/ws/gearattach/{token}/")
    assert (await communicator.connect(timeout=5))[0]
    assert json.loads(await communicator.receive_from(10))["type"] == "complete"
    await communicator.disconnect()


async def test_stream_urls_refuse_a_forged_token_as_before(async_client: AsyncClient) -> None:
    job = await Job.objects.acreate(function="tests.streamer", key="k", status=Status.COMPLETE)
    forged = token_of(job)[:-2] + "xx"
    response = await async_client.get(url(forged, "events"), {"after": "1:3"})
    assert response.status_code == 403
