"""``asubmit`` and ``aattach`` on the event loop's shared connections."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from asgiref.sync import sync_to_async

from django_gearattach import JobNotFound, aattach, asubmit
from django_gearattach.clients import get_async_client
from django_gearattach.gearman.rendezvous import Address
from django_gearattach.models import Job, Status
from tests.conftest import executions
from tests.dbthreads import closes_thread_connections  # noqa: F401
from tests.helpers import foreground_clients, wait_for_status, wait_until

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("closes_thread_connections"),
]


async def collect(function: str, key: str, timeout: float = 30.0) -> list[dict[str, Any]]:
    return [e.as_dict() async for e in aattach(function, key, timeout=timeout)]


async def test_asubmit_and_aattach(gearmand, worker):
    job = await asubmit("tests.add", [40, 2])
    assert (await collect("tests.add", job.key))[-1] == {"event": "complete", "result": 42}
    # Finished: answered from the record.
    assert await collect("tests.add", job.key) == [{"event": "complete", "result": 42}]


async def test_aattach_unknown_key(gearmand):
    with pytest.raises(JobNotFound):
        await collect("tests.add", "missing")
    assert not await Job.objects.aexists()


async def test_many_attachers_in_one_loop_share_one_gearmand_attachment(
    gearmand, worker, tmp_path
):
    gate = tmp_path / "gate"
    job = await asubmit("tests.chatty", [str(gate)])
    await sync_to_async(wait_for_status)("tests.chatty", job.key, Status.RUNNING)
    tasks = [asyncio.create_task(collect("tests.chatty", job.key)) for _ in range(50)]
    conn = get_async_client().connection(Address.parse(gearmand.address))

    async def attached() -> bool:
        while conn.attachment_count() != 1 or _subscribers(conn) != 50:
            await asyncio.sleep(0.01)
        return True

    await asyncio.wait_for(attached(), 20)
    clients = await sync_to_async(foreground_clients)(gearmand.address, job.key)
    assert clients == 1  # one gearmand attachment for 50 local attachers
    gate.touch()
    results = await asyncio.gather(*tasks)
    assert all(r == results[0] for r in results)
    assert [e["event"] for e in results[0]] == ["status", "data", "warning", "status", "complete"]


def _subscribers(conn) -> int:
    return sum(len(shared.subscribers) for shared in conn._shared.values())


async def test_leaving_early_keeps_the_attachment_so_the_job_survives(
    gearmand, worker_factory, log_path
):
    job = await asubmit("tests.record", [str(log_path)])
    with pytest.raises(TimeoutError):
        await collect("tests.record", job.key, timeout=0.3)
    await sync_to_async(worker_factory)([gearmand])
    assert (await collect("tests.record", job.key))[-1]["event"] == "complete"
    await sync_to_async(wait_until)(lambda: len(executions(log_path)) == 1)
