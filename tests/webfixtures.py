"""Fixtures of the web-layer tests: one gearmand and one worker per test module.

Starting a worker costs about a second, so the web tests share one per module (on the
session's test database, which pytest-django flushes between tests) instead of one
per test. Import the fixtures into a test module to use them.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio
from asgiref.sync import sync_to_async
from django.db import connection, connections

from django_gearattach.clients import get_async_client
from django_gearattach.testing import Gearmand, WorkerProcess, wait_for_workers
from django_gearattach.web.hub import get_hub
from django_gearattach.web.messages import OFFLOAD_FUNCTION

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def web_gearmand() -> Iterator[Gearmand]:
    with Gearmand() as server:
        yield server


@pytest.fixture(scope="module")
def web_worker(
    web_gearmand: Gearmand, django_db_setup: None, django_db_blocker: object
) -> Iterator[WorkerProcess]:
    env = {"GEARATTACH_TEST_DATABASE": str(connection.settings_dict["NAME"])}
    if os.environ.get("DATABASE_URL"):
        env["DATABASE_URL"] = os.environ["DATABASE_URL"]
    worker = WorkerProcess(
        [web_gearmand.address],
        "tests.settings",
        env=env,
        args=["--concurrency", "2"],
        cwd=str(ROOT),
    ).start()
    try:
        wait_for_workers(web_gearmand.address, OFFLOAD_FUNCTION, 2)
        yield worker
    finally:
        worker.cleanup()


@pytest.fixture
def cluster(web_gearmand: Gearmand, web_worker: WorkerProcess, transactional_db: None, settings):
    """gearmand and a worker running this project's tasks, configured as the only server."""
    settings.GEARATTACH = {**settings.GEARATTACH, "SERVERS": [web_gearmand.address]}
    return web_gearmand


@pytest_asyncio.fixture
async def hub() -> AsyncIterator[object]:
    """The event loop's hub, closed (with the loop's gearmand connections) afterwards."""
    current = get_hub()
    current.linger = 0
    yield current
    await current.aclose()
    await get_async_client().close()
    # The hub read records in asgiref's executor thread: close that thread's connection,
    # or PostgreSQL refuses to drop the test database at the end of the session.
    await sync_to_async(connections.close_all)()


@pytest.fixture
def gate(tmp_path: Path) -> Iterator[Path]:
    """A file a gated job waits for; opened at teardown, so no job outlives its test."""
    path = tmp_path / "gate"
    yield path
    path.touch()
