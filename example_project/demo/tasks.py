"""The demo's task. ``manage.py gearworker`` finds it because it lives in an app's tasks.py."""

from __future__ import annotations

import math
import os
import socket
import time
import uuid

from django_gearattach import JobContext, task

#: Bounds that keep a demo worker from being tied up by a typo.
MAX_SECONDS = 600
MAX_STEPS = 1000


def check_arguments(seconds: object, steps: object) -> tuple[float, int]:
    """Validated ``(seconds, steps)``; a ValueError says what was wrong."""
    if isinstance(seconds, bool) or not isinstance(seconds, int | float):
        raise ValueError(f"seconds must be a number, got {seconds!r}")
    if not math.isfinite(seconds) or not 0 <= seconds <= MAX_SECONDS:
        raise ValueError(f"seconds must be between 0 and {MAX_SECONDS}, got {seconds!r}")
    if isinstance(steps, bool) or not isinstance(steps, int):
        raise ValueError(f"steps must be a whole number, got {steps!r}")
    if not 1 <= steps <= MAX_STEPS:
        raise ValueError(f"steps must be between 1 and {MAX_STEPS}, got {steps!r}")
    return float(seconds), steps


@task(name="example.slow", bind=True)
def slow(job: JobContext | None, seconds: float = 3, steps: int = 5) -> dict[str, str]:
    """Sleep ``seconds`` in ``steps`` equal steps, reporting progress after each.

    Returns an id unique to this execution, so that every attached client can see
    that they all got the outcome of one and the same run.
    """
    seconds, steps = check_arguments(seconds, steps)
    for i in range(1, steps + 1):
        time.sleep(seconds / steps)
        if job is not None:  # None when called directly, outside a worker
            job.progress(i, steps)
    return {"done": f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex}"}
