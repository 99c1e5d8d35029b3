"""The task that :mod:`.streams` measures (imported once Django is configured)."""

from __future__ import annotations

import time
from pathlib import Path

from ..tasks import JobContext, task

STREAM = "gearattach.bench.stream"


def _wait(gate: str) -> None:
    deadline = time.monotonic() + 120
    while not Path(gate).exists() and time.monotonic() < deadline:
        time.sleep(0.001)


@task(name=STREAM, bind=True)
def stream(job: JobContext, start: str, half: str, chunks: int = 10_000) -> int:
    """Stream ``chunks`` chunks of ~20 bytes (the time each is streamed, and padding),
    once ``start`` exists; wait at the half for ``half`` to exist."""
    _wait(start)
    for number in range(1, chunks + 1):
        job.stream(f"{time.time():.6f}|ab")
        if number == chunks // 2:
            _wait(half)
    return chunks
