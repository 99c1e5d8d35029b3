"""A browser following a run that a newer submit replaced (latest wins): the hub tells it
``superseded`` and follows the new run; a newcomer catches up with the new run only."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator

from django_gearattach import submit
from django_gearattach.models import Job, Status
from django_gearattach.web.hub import Hub
from django_gearattach.web.messages import Message
from django_gearattach.web.tokens import make_token
from tests.asgi import application
from tests.helpers import wait_until

pytest_plugins = ["tests.webfixtures"]

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("hub")]


async def test_a_socket_hears_superseded_then_follows_the_new_run(
    cluster, hub: Hub, gate: Path, log_path: Path
) -> None:
    args = [str(log_path)]
    job = await sync_to_async(submit)(
        "tests.preview", args, {"gate": str(gate), "steps": 2, "tag": "a"}, key="ws-pv"
    )

    def reported() -> bool:
        return Job.objects.filter(pk=job.pk, progress_numerator=2).exists()

    await sync_to_async(wait_until)(reported, what="the first run's progress")
    socket = WebsocketCommunicator(
        application, f"/ws/gearattach/{make_token(job.function, job.key, None)}/"
    )
    assert (await socket.connect(timeout=5))[0]
    try:
        caught_up = [await socket.receive_json_from(10) for _ in range(2)]
        assert caught_up == [
            {"type": "started"},
            {"type": "status", "numerator": 2, "denominator": 2},
        ]
        await sync_to_async(submit)("tests.preview", args, {"steps": 1, "tag": "b"}, key="ws-pv")
        received = []
        while True:
            output = await socket.receive_output(20)
            if output["type"] == "websocket.close":
                break
            received.append(json.loads(output["text"]))
    finally:
        await socket.disconnect()
    types = [message["type"] for message in received]
    assert types[0] == "superseded"
    assert received[-1] == {"type": "complete", "result": {"tag": "b"}, "html": None}
    record = await sync_to_async(Job.objects.get)(pk=job.pk)
    assert (record.run_number, record.status) == (2, Status.COMPLETE)


async def test_after_superseded_the_hub_forgets_the_old_runs_progress(hub: Hub) -> None:
    feed_messages: list[Message] = []
    feed = hub._feed("tests.preview", "nowhere", None)
    feed.task.cancel()
    feed.subscribe(feed_messages.append)
    feed.publish({"type": "started"})
    feed.publish({"type": "status", "numerator": 2, "denominator": 2})
    feed.publish({"type": "superseded"})
    assert feed.backlog() == []
    feed.publish({"type": "started"})
    assert [m.type for m in feed.backlog()] == ["started"]
    assert [m.type for m in feed_messages] == ["started", "status", "superseded", "started"]
    await asyncio.sleep(0)
