"""A fixture for async tests whose database calls run in asgiref's executor thread."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from asgiref.sync import sync_to_async
from django.db import connections


@pytest.fixture
async def closes_thread_connections() -> AsyncIterator[None]:
    """Close the executor thread's connections after the test.

    ``sync_to_async`` runs an async test's database calls in one long-lived thread,
    whose connection outlives the test; on PostgreSQL it keeps the test database from
    being dropped at the end of the session.
    """
    yield
    await sync_to_async(connections.close_all)()
