"""``faults.body``: log the job's key, sleep a little, log it again (and two variants:
``faults.solo``, limited to one at once, and ``faults.retrying``, which retries once).

The log (``GAF_EXECUTIONS``, one file shared by every simulated host) gets ``KEY start``
when a task body begins and ``KEY end`` when it returns (then the host, the process
and the time), so a key with two ``start``
lines ran twice, and one with two ``end`` lines ran to the end twice.
"""

import os
import time
from typing import Any

from django_gearattach import task
from django_gearattach.celery import shared_task


@task(name="faults.body")
def body(key: str, seconds: float = 0.05) -> str:
    log(key, "start")
    time.sleep(seconds)
    log(key, "end")
    return key


def log(key: str, event: str) -> None:
    fd = os.open(os.environ["GAF_EXECUTIONS"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        where = f"{os.environ.get('GAF_HOST', '?')} {os.getpid()} {time.time():.3f}"
        os.write(fd, f"{key} {event} {where}\n".encode())  # one write: lines stay whole
    finally:
        os.close(fd)


@task(name="faults.solo", concurrency=1)
def solo(key: str, seconds: float = 0.05) -> str:
    """At most one runs at once on every host (the limits row counts the overlap)."""
    log(key, "start")
    time.sleep(seconds)
    log(key, "end")
    return key


@shared_task(bind=True, name="faults.retrying", max_retries=3)
def retrying(self: Any, key: str, seconds: float = 0.05) -> str:
    """Retries once (Celery's ``self.retry()``), then returns; each run logs as
    ``KEY~rN`` (N its retry count), so a run that started twice is told from a retry."""
    run = f"{key}~r{self.request.retries}"
    log(run, "start")
    time.sleep(seconds)
    log(run, "end")
    if self.request.retries == 0:
        raise self.retry(countdown=0)
    return key
