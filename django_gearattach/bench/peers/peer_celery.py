"""Celery as its docs set it up: Redis as broker and as result backend.

Worker: ``celery -A peer_celery worker --concurrency 2`` (prefork). Runs in the peers'
interpreter only."""

import os
from typing import Any

from celery import Celery

URL = os.environ["GEARATTACH_PEER_REDIS"]
app = Celery("peer_celery", broker=URL, backend=URL)


@app.task  # type: ignore[untyped-decorator]
def noop() -> None:
    return None


def submit() -> Any:
    return noop.delay()


def wait(result: Any) -> Any:
    return result.get(timeout=60)
