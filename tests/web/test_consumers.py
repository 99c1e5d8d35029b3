"""The websocket consumer, through ``WebsocketCommunicator``, against real gearmand."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings as django_settings
from django.contrib.auth.models import User
from django.test import Client

from django_gearattach import submit
from django_gearattach.models import Job, Status
from django_gearattach.web.consumers import MAX_FRAME_BYTES
from django_gearattach.web.hub import Hub
from django_gearattach.web.tokens import Identity, make_token
from tests.asgi import application
from tests.helpers import foreground_clients, wait_for_status, wait_until

pytest_plugins = ["tests.webfixtures"]

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("hub")]

SHARED = None  # make_token(..., None): a token anyone may use


@pytest_asyncio.fixture
async def sockets() -> AsyncIterator[list[WebsocketCommunicator]]:
    opened: list[WebsocketCommunicator] = []
    yield opened
    for communicator in opened:
        await communicator.disconnect()


async def connect(
    sockets: list[WebsocketCommunicator], token: str, cookie: str = ""
) -> WebsocketCommunicator:
    headers = [(b"cookie", cookie.encode())] if cookie else []
    communicator = WebsocketCommunicator(application, f"/ws/gearattach/{token}/", headers)
    connected, _ = await communicator.connect(timeout=5)
    assert connected
    sockets.append(communicator)
    return communicator


async def close_code(communicator: WebsocketCommunicator, timeout: float = 10) -> int:
    output = await communicator.receive_output(timeout)
    assert output["type"] == "websocket.close", output
    return int(output.get("code", 1000))


async def messages_until_close(communicator: WebsocketCommunicator) -> list[dict[str, Any]]:
    received: list[dict[str, Any]] = []
    while True:
        output = await communicator.receive_output(20)
        if output["type"] == "websocket.close":
            assert output.get("code", 1000) == 1000
            return received
        received.append(json.loads(output["text"]))


def login_cookie(username: str) -> tuple[User, str]:
    user = User.objects.create_user(username, password="pw")
    client = Client()
    client.force_login(user)
    return user, f"{django_settings.SESSION_COOKIE_NAME}={client.session.session_key}"


async def test_forged_token_closes_4403(sockets) -> None:
    communicator = await connect(sockets, "forged-token")
    assert await close_code(communicator) == 4403


async def test_tampered_token_closes_4403(sockets) -> None:
    token = make_token("tests.add", "k", SHARED)
    communicator = await connect(sockets, token[:-2] + "zz")
    assert await close_code(communicator) == 4403


async def test_expired_token_closes_4403(sockets, settings) -> None:
    token = make_token("tests.add", "k", SHARED)
    settings.GEARATTACH = {**settings.GEARATTACH, "TOKEN_MAX_AGE": -1}
    assert await close_code(await connect(sockets, token)) == 4403


async def test_another_users_job_closes_4403_and_the_owner_gets_it(sockets) -> None:
    owner, owner_cookie = await sync_to_async(login_cookie)("owner")
    _, stranger_cookie = await sync_to_async(login_cookie)("stranger")
    await Job.objects.acreate(
        function="tests.add", key="mine", status=Status.COMPLETE, result=3, owner=owner
    )
    token = make_token("tests.add", "mine", Identity(user_id=owner.pk))
    assert await close_code(await connect(sockets, token, stranger_cookie)) == 4403
    assert await close_code(await connect(sockets, token)) == 4403  # anonymous
    mine = await connect(sockets, token, owner_cookie)
    assert await messages_until_close(mine) == [{"type": "complete", "result": 3, "html": None}]


async def test_unknown_job_closes_4404(sockets) -> None:
    token = make_token("tests.add", "never-submitted", SHARED)
    assert await close_code(await connect(sockets, token)) == 4404
    assert not await Job.objects.aexists()


@pytest.mark.parametrize(
    ("debug", "shown"), [(False, "the job failed"), (True, "ValueError: boom")]
)
async def test_finished_job_answers_at_once_from_the_record(
    sockets, settings, debug: bool, shown: str
) -> None:
    """The record's error reaches browsers only with DEBUG on (it may hold anything)."""
    settings.DEBUG = debug
    await Job.objects.acreate(
        function="tests.fail", key="done", status=Status.FAILED, error="ValueError: boom"
    )
    communicator = await connect(sockets, make_token("tests.fail", "done", SHARED))
    assert await messages_until_close(communicator) == [{"type": "failed", "error": shown}]


async def test_offloaded_views_html_is_split_out(sockets) -> None:
    result = {"status": 200, "content_type": "text/html", "html": "<p>hi</p>"}
    await Job.objects.acreate(
        function="gearattach.offload", key="page", status=Status.COMPLETE, result=result
    )
    communicator = await connect(sockets, make_token("gearattach.offload", "page", SHARED))
    assert await messages_until_close(communicator) == [
        {
            "type": "complete",
            "result": {"status": 200, "content_type": "text/html"},
            "html": "<p>hi</p>",
        }
    ]


async def test_malformed_frames_get_errors_and_the_socket_stays_usable(sockets, gearmand) -> None:
    job = await sync_to_async(submit)("tests.noop")  # stays queued: no worker runs
    communicator = await connect(sockets, make_token(job.function, job.key, SHARED))
    for frame in ("not json", "[1, 2]", '{"type": "subscribe"}', '"ping"', "{"):
        await communicator.send_to(text_data=frame)
        answer = await communicator.receive_json_from(5)
        assert answer["type"] == "error", frame
        assert answer["error"]
    await communicator.send_to(bytes_data=b"\x00\x01")
    assert (await communicator.receive_json_from(5))["type"] == "error"
    await communicator.send_to(text_data='{"type": "ping"}')
    assert await communicator.receive_json_from(5) == {"type": "pong"}


async def test_oversized_frame_is_refused(sockets, gearmand) -> None:
    job = await sync_to_async(submit)("tests.noop")
    communicator = await connect(sockets, make_token(job.function, job.key, SHARED))
    await communicator.send_to(
        text_data=json.dumps({"type": "ping", "pad": "x" * MAX_FRAME_BYTES})
    )
    answer = await communicator.receive_json_from(5)
    assert answer["type"] == "error"
    assert "too large" in answer["error"]
    assert await close_code(communicator) == 1009


async def test_sockets_share_one_gearmand_attachment_and_get_every_event(
    sockets, cluster, hub: Hub, gate: Path
) -> None:
    job = await sync_to_async(submit)("tests.chatty", [str(gate)])
    await sync_to_async(wait_for_status)(job.function, job.key, Status.RUNNING)
    token = make_token(job.function, job.key, SHARED)
    watchers = [await connect(sockets, token) for _ in range(5)]

    async def attached() -> None:
        while hub.stats() != {"feeds": 1, "subscribers": 5} or (
            await sync_to_async(foreground_clients)(cluster.address, job.key) != 1
        ):
            await asyncio.sleep(0.02)

    await asyncio.wait_for(attached(), 20)
    gate.touch()
    received = [await messages_until_close(w) for w in watchers]
    assert all(r == received[0] for r in received)
    assert received[0] == [
        {"type": "started"},  # from the record: the job was running when they connected
        {"type": "status", "numerator": 1, "denominator": 3},
        {"type": "data", "data": {"partial": [1, 2]}},
        {"type": "warning", "message": "careful"},
        {"type": "status", "numerator": 3, "denominator": 3},
        {"type": "complete", "result": {"answer": 42}, "html": None},
    ]


async def test_late_sockets_catch_up_then_follow_an_offloaded_view(
    sockets, cluster, hub: Hub, gate: Path
) -> None:
    response = await sync_to_async(Client().get)("/offload/sync/", {"gate": str(gate)})
    job = response.context["job"]

    def reported() -> bool:  # the view has reported its first progress and data
        return Job.objects.filter(pk=job.pk, data__isnull=False).exists()

    await sync_to_async(wait_until)(reported, what="the view's first report")
    token = make_token(job.function, job.key, SHARED)
    catch_up = [
        {"type": "started"},
        {"type": "status", "numerator": 1, "denominator": 3},
        {"type": "data", "data": {"stage": "started"}},
    ]
    # The first socket catches up from the record, the next one from the hub.
    first = await connect(sockets, token)
    assert [await first.receive_json_from(10) for _ in catch_up] == catch_up
    late = await connect(sockets, token)
    assert [await late.receive_json_from(10) for _ in catch_up] == catch_up
    assert hub.stats() == {"feeds": 1, "subscribers": 2}
    joined = sync_to_async(foreground_clients)
    while await joined(cluster.address, job.key) != 1:  # the channel joins the running job
        await asyncio.sleep(0.02)
    gate.touch()
    for communicator in (first, late):
        rest = await messages_until_close(communicator)
        assert rest[:2] == [
            {"type": "status", "numerator": 2, "denominator": 3},
            {"type": "status", "numerator": 3, "denominator": 3},
        ]
        assert rest[-1]["type"] == "complete"
        assert rest[-1]["result"]["status"] == 200
        assert 'id="method">GET<' in rest[-1]["html"]


async def test_a_socket_on_a_queued_job_never_makes_it_vanish(
    sockets, gearmand, worker_factory, hub: Hub, log_path: Path
) -> None:
    job = await sync_to_async(submit)("tests.record", [str(log_path)])
    communicator = await connect(sockets, make_token(job.function, job.key, SHARED))
    await asyncio.wait_for(_until(lambda: hub.stats()["subscribers"] == 1), 10)
    joined = sync_to_async(foreground_clients)
    while await joined(gearmand.address, job.key) != 1:  # the hub follows it in the foreground
        await asyncio.sleep(0.02)
    await communicator.disconnect()
    sockets.remove(communicator)
    await hub.aclose()
    await sync_to_async(worker_factory)([gearmand])
    done = await sync_to_async(wait_for_status)(job.function, job.key, Status.COMPLETE)
    assert done.result["done"]
    assert len(log_path.read_text().split()) == 1


async def test_a_socket_hears_its_queued_job_start_and_end(
    sockets, gearmand, worker_factory, hub: Hub, log_path: Path
) -> None:
    job = await sync_to_async(submit)("tests.record", [str(log_path)])
    communicator = await connect(sockets, make_token(job.function, job.key, SHARED))
    joined = sync_to_async(foreground_clients)
    while await joined(gearmand.address, job.key) != 1:
        await asyncio.sleep(0.02)
    await sync_to_async(worker_factory)([gearmand])
    messages = await messages_until_close(communicator)
    # No worker when the socket came: it heard that first (issue 21), then the run.
    assert [m["type"] for m in messages] == ["unserved", "started", "complete"]
    assert messages[0]["function"] == "tests.record"


async def _until(predicate: Any) -> None:
    while not predicate():
        await asyncio.sleep(0.01)


async def test_with_debug_a_failure_reaches_its_follower_with_the_traceback(
    sockets, cluster, settings
) -> None:
    settings.DEBUG = True
    job = await sync_to_async(submit)("tests.fail", ["kaput"])
    communicator = await connect(sockets, make_token(job.function, job.key, SHARED))
    failed = (await messages_until_close(communicator))[-1]
    assert failed["error"] == "ValueError: kaput"
    assert "raise ValueError(message)" in failed["traceback"]
