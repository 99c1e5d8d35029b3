"""``request.gearattach.stream()`` in an offloaded view: its processing page's widget gets
the chunks, then the view's page (real gearmand, a real worker process)."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings as django_settings
from django.test import AsyncClient, Client
from django.utils.crypto import salted_hmac

from django_gearattach import streams
from django_gearattach.testing import Gearmand, WorkerProcess
from django_gearattach.web.messages import OFFLOAD_FUNCTION
from tests.asgi import application
from tests.helpers import foreground_clients, one_by_one, sse_messages, wait_until
from tests.rawgearman import ForgingPeer
from tests.web.test_offload import finish, started

pytest_plugins = ["tests.webfixtures"]

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("hub")]


async def follow(client: AsyncClient, token: str) -> list[dict[str, Any]]:
    response = await client.get(f"/gearattach/jobs/{token}/events/")
    assert response.status_code == 200

    async def read() -> str:
        return "".join([c.decode() async for c in response.streaming_content])  # type: ignore[attr-defined]

    return sse_messages(await asyncio.wait_for(read(), 30))


@pytest.mark.parametrize(
    ("path", "extra"), [("/offload/streaming/", []), ("/offload/streaming-async/", [{"words": 3}])]
)
@pytest.mark.usefixtures("cluster")
async def test_an_offloaded_view_streams_to_its_processing_page(
    path: str, extra: list[Any]
) -> None:
    client = Client()
    job, token = started(await sync_to_async(client.get)(path))
    await sync_to_async(finish)(job)
    browser = AsyncClient()
    browser.cookies = client.cookies  # the same visitor: the token is bound to the session
    messages = await follow(browser, token)
    chunks = [m for m in messages if m["type"] == "chunk"]
    assert [c["data"] for c in chunks] == ["Dear", " <b>reader</b>,", " done.", *extra]
    assert [c["seq"] for c in chunks] == list(range(1, len(chunks) + 1))
    assert messages[-1]["type"] == "complete"
    assert 'id="streamed"' in messages[-1]["html"]
    assert json.dumps(messages).count("Dear") == 1


class ChunkForger(ForgingPeer):
    """A host on gearmand's network that sends chunks in this app's packet format."""

    def chunk(self, handle: bytes, payload: bytes) -> None:
        self._send(28, handle, payload)  # WORK_DATA


@pytest.mark.usefixtures("transactional_db")
async def test_a_forged_chunk_never_reaches_a_browser(
    gearmand: Gearmand,
    worker_factory: Callable[..., WorkerProcess],
    settings: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, "django_gearattach.streams")
    settings.GEARATTACH = {**settings.GEARATTACH, "SERVERS": [gearmand.address]}
    client = Client()
    job, token = started(await sync_to_async(client.get)("/offload/streaming/"))
    cookie = f"{django_settings.SESSION_COOKIE_NAME}={client.session.session_key}"
    socket = WebsocketCommunicator(
        application, f"/ws/gearattach/{token}/", [(b"cookie", cookie.encode())]
    )
    assert (await socket.connect(timeout=5))[0]
    await asyncio.to_thread(
        wait_until,
        lambda: foreground_clients(gearmand.address, job.key) >= 1,
        what="the hub to join",
    )
    peer = await asyncio.to_thread(ChunkForger, gearmand.address, OFFLOAD_FUNCTION)
    handle, _, _ = await asyncio.to_thread(peer.take)
    forged = b'"<script>pwned</script>"'
    for packet in (
        streams.PREFIX + b"1 1 " + b"0" * 32 + b" " + forged,  # a made-up signature
        # Signed, but with another site's key.
        streams.PREFIX
        + b"1 1 "
        + salted_hmac(streams.SALT, b"x", secret="another site").hexdigest()[:32].encode()
        + b" "
        + forged,
        streams.PREFIX + b"garbage",
    ):
        await asyncio.to_thread(peer.chunk, handle, packet)
    await asyncio.to_thread(peer.complete, handle, b"{}")
    await asyncio.to_thread(peer.close)
    await sync_to_async(worker_factory)([gearmand])
    received: list[dict[str, Any]] = []
    while True:
        output = await socket.receive_output(60)
        if output["type"] == "websocket.close":
            break
        received.append(json.loads(output["text"]))
    received = one_by_one(received)
    assert "pwned" not in json.dumps(received)
    chunks = [m["data"] for m in received if m["type"] == "chunk"]
    assert chunks == ["Dear", " <b>reader</b>,", " done."]  # this site's worker's, only
    assert received[-1]["type"] == "complete"
    dropped = [r for r in caplog.records if "dropped" in r.getMessage()]
    assert len(dropped) == 3  # the hub heard each forged packet, and dropped it
