"""The HTTP fallbacks: JSON status, long-poll and Server-Sent Events, plus downloads."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth.models import User
from django.test import AsyncClient, Client

from django_gearattach import submit
from django_gearattach.models import Job, Status
from django_gearattach.web.hub import Hub
from django_gearattach.web.tokens import Identity, make_token
from tests.helpers import foreground_clients, sse_events, sse_messages, wait_for_status

pytest_plugins = ["tests.webfixtures"]

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("hub")]


def url(token: str, endpoint: str = "") -> str:
    return f"/gearattach/jobs/{token}/{endpoint + '/' if endpoint else ''}"


def shared(function: str, key: str) -> str:
    return make_token(function, key, None)


async def finished(function: str = "tests.add", key: str = "k", **fields: Any) -> Job:
    fields = {"status": Status.COMPLETE, "result": 3, **fields}
    return await Job.objects.acreate(function=function, key=key, **fields)


# -- refusals -----------------------------------------------------------------------------
@pytest.mark.parametrize("endpoint", ["", "poll", "events", "download"])
async def test_forged_token_is_403_everywhere(async_client: AsyncClient, endpoint: str) -> None:
    await finished()
    for token in ("forged", shared("tests.add", "k") + "x"):
        response = await async_client.get(url(token, endpoint))
        assert response.status_code == 403
        assert "invalid, expired, or was issued to another user" in response.json()["error"]


@pytest.mark.parametrize("endpoint", ["", "poll", "events", "download"])
async def test_unknown_job_is_404(async_client: AsyncClient, endpoint: str) -> None:
    response = await async_client.get(url(shared("tests.add", "gone"), endpoint))
    assert response.status_code == 404
    assert response.json() == {"error": "no such job: its record no longer exists"}


def test_another_users_job_is_403_and_reveals_nothing(client: Client) -> None:
    owner = User.objects.create_user("owner")
    stranger = User.objects.create_user("stranger")
    Job.objects.create(function="tests.add", key="k", status=Status.COMPLETE, result=3)
    token = make_token("tests.add", "k", Identity(user_id=owner.pk))
    unknown = make_token("tests.add", "no-such-key", Identity(user_id=owner.pk))
    client.force_login(stranger)
    refused, refused_unknown = client.get(url(token)), client.get(url(unknown))
    assert refused.status_code == refused_unknown.status_code == 403
    assert refused.content == refused_unknown.content  # no hint that one of them exists
    client.force_login(owner)
    assert client.get(url(token)).json()["outcome"]["result"] == 3


# -- the JSON status ---------------------------------------------------------------------
def test_status_of_a_queued_job(client: Client) -> None:
    Job.objects.create(
        function="tests.add",
        key="q",
        status=Status.QUEUED,
        progress_numerator=1,
        progress_denominator=4,
        data={"rows": 10},
    )
    response = client.get(url(shared("tests.add", "q")))
    assert response.status_code == 200
    assert response["Cache-Control"].startswith("max-age=0")
    assert response.json() == {
        "status": "queued",
        "numerator": 1,
        "denominator": 4,
        "data": {"rows": 10},
        "outcome": None,
    }


@pytest.mark.parametrize("debug", [False, True])
def test_status_does_not_leak_internals(client: Client, settings, debug: bool) -> None:
    settings.DEBUG = debug
    Job.objects.create(
        function="tests.fail",
        key="f",
        status=Status.FAILED,
        error="ValueError: password=hunter2",
        traceback="Traceback (most recent call last): secret paths",
        worker_host="internal-host",
    )
    body = client.get(url(shared("tests.fail", "f"))).content.decode()
    error = json.loads(body)["outcome"]["error"]
    # The error itself only with DEBUG on: it may hold anything.
    assert error == ("ValueError: password=hunter2" if debug else "the job failed")
    # The traceback too: with DEBUG on its owner sees it, as on Django's debug pages.
    assert ("secret paths" in body) is debug
    assert "internal-host" not in body


# -- long-poll -----------------------------------------------------------------------------
@pytest.mark.parametrize("timeout", ["-1", "61", "1e9", "abc", "nan", "inf", "-0.5"])
async def test_long_poll_timeout_out_of_range_is_400(
    async_client: AsyncClient, timeout: str
) -> None:
    await finished()
    response = await async_client.get(url(shared("tests.add", "k"), "poll"), {"timeout": timeout})
    assert response.status_code == 400
    assert response.json() == {"error": "timeout must be a number of seconds from 0 to 60"}


async def test_long_poll_bound_follows_the_setting(async_client: AsyncClient, settings) -> None:
    settings.GEARATTACH = {**settings.GEARATTACH, "LONGPOLL_MAX_TIMEOUT": 5}
    await finished()
    poll = url(shared("tests.add", "k"), "poll")
    assert (await async_client.get(poll, {"timeout": "6"})).status_code == 400
    assert (await async_client.get(poll, {"timeout": "5"})).status_code == 200


async def test_long_poll_bad_cursor_is_400(async_client: AsyncClient) -> None:
    await finished()
    response = await async_client.get(url(shared("tests.add", "k"), "poll"), {"cursor": "x.y"})
    assert response.status_code == 400


async def test_long_poll_finished_job_answers_at_once(async_client: AsyncClient) -> None:
    await finished()
    response = await async_client.get(url(shared("tests.add", "k"), "poll"), {"timeout": "30"})
    assert response.json() == {
        "messages": [{"type": "complete", "result": 3, "html": None}],
        "cursor": "0.0",
        "done": True,
    }


async def test_long_poll_times_out_with_nothing_new(
    async_client: AsyncClient, gearmand, hub: Hub
) -> None:
    hub.linger = 30  # the channel stays attached between polls, as in production
    job = await sync_to_async(submit)("tests.noop")  # queued: no worker
    poll = url(shared(job.function, job.key), "poll")
    # At once: no worker is running for its function, so the job waits (issue 21).
    first = (await async_client.get(poll, {"timeout": "5"})).json()
    assert first["messages"] == [{"type": "unserved", "function": "tests.noop"}]
    loop = asyncio.get_running_loop()
    started = loop.time()
    answer = (await async_client.get(poll, {"timeout": "0.3", "cursor": first["cursor"]})).json()
    assert 0.25 <= loop.time() - started < 5
    assert answer["messages"] == []
    assert answer["done"] is False
    # The hub follows the queued job in the foreground (to hear it start), and keeps
    # following it after the request: leaving a queued job would make gearmand drop it.
    assert await sync_to_async(foreground_clients)(gearmand.address, job.key) == 1


async def test_long_poll_follows_a_running_job(
    async_client: AsyncClient, cluster, hub: Hub, gate: Path
) -> None:
    job = await sync_to_async(submit)("tests.chatty", [str(gate)])
    await sync_to_async(wait_for_status)(job.function, job.key, Status.RUNNING)
    hub.linger = 30  # the channel stays attached between polls, as in production
    poll = url(shared(job.function, job.key), "poll")
    first = (await async_client.get(poll, {"timeout": "0.2"})).json()
    assert first["messages"] == [{"type": "started"}]  # running, nothing reported yet
    waiting = asyncio.create_task(
        async_client.get(poll, {"timeout": "20", "cursor": first["cursor"]})
    )
    while hub.stats() != {"feeds": 1, "subscribers": 1} or (
        await sync_to_async(foreground_clients)(cluster.address, job.key) != 1
    ):
        await asyncio.sleep(0.02)
    gate.touch()
    seen: list[dict[str, Any]] = []
    answer = (await waiting).json()
    while True:
        seen += answer["messages"]
        if answer["done"]:
            break
        answer = (
            await async_client.get(poll, {"timeout": "20", "cursor": answer["cursor"]})
        ).json()
    assert seen[0] == {"type": "status", "numerator": 1, "denominator": 3}
    assert seen[-1] == {"type": "complete", "result": {"answer": 42}, "html": None}


# -- Server-Sent Events ------------------------------------------------------------------------
async def read_events(response: Any, timeout: float = 20) -> list[dict[str, Any]]:
    async def read() -> str:
        return "".join([chunk.decode() async for chunk in response.streaming_content])

    text = await asyncio.wait_for(read(), timeout)
    assert text.startswith("retry: 2000\n\n")
    events = sse_events(text)
    assert events[-1]["event"] == "end"  # htmx's SSE extension closes on it
    return sse_messages(text)


async def test_sse_finished_job(async_client: AsyncClient) -> None:
    await finished()
    response = await async_client.get(url(shared("tests.add", "k"), "events"))
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/event-stream")
    assert await read_events(response) == [{"type": "complete", "result": 3, "html": None}]


async def test_sse_streams_a_running_job(async_client: AsyncClient, cluster, gate: Path) -> None:
    job = await sync_to_async(submit)("tests.chatty", [str(gate)])
    await sync_to_async(wait_for_status)(job.function, job.key, Status.RUNNING)
    response = await async_client.get(url(shared(job.function, job.key), "events"))
    reading = asyncio.create_task(read_events(response))
    while await sync_to_async(foreground_clients)(cluster.address, job.key) != 1:
        await asyncio.sleep(0.02)
    gate.touch()
    assert await reading == [
        {"type": "started"},
        {"type": "status", "numerator": 1, "denominator": 3},
        {"type": "data", "data": {"partial": [1, 2]}},
        {"type": "warning", "message": "careful"},
        {"type": "status", "numerator": 3, "denominator": 3},
        {"type": "complete", "result": {"answer": 42}, "html": None},
    ]


# -- downloads ----------------------------------------------------------------------------------
def test_download_needs_a_finished_offload_job(client: Client) -> None:
    Job.objects.create(function="tests.add", key="k", status=Status.COMPLETE, result=3)
    assert client.get(url(shared("tests.add", "k"), "download")).status_code == 404
    Job.objects.create(
        function="gearattach.offload",
        key="html",
        status=Status.COMPLETE,
        result={"status": 200, "content_type": "text/html", "html": "<p>x</p>"},
    )
    assert client.get(url(shared("gearattach.offload", "html"), "download")).status_code == 404
