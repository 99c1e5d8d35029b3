"""Tasks the test suite runs through real gearmand and real workers."""

import os
import signal
import time
import uuid
from pathlib import Path

from django_gearattach import task


def _execution() -> str:
    return f"{os.getpid()}-{uuid.uuid4().hex}"


@task(name="tests.add")
def add(a, b):
    return a + b


@task(name="tests.noop")
def noop():
    return None


@task(name="tests.record", bind=True)
def record(job, log_path, gate=None, steps=0):
    """Append one line per execution to ``log_path``; wait for ``gate`` to exist first.

    Tests count the lines to prove how many times a job ran.
    """
    execution = _execution()
    with open(log_path, "a") as log:
        log.write(execution + "\n")
    for step in range(steps):
        job.progress(step + 1, steps)
        time.sleep(0.02)
    if gate:
        deadline = time.monotonic() + 30
        while not Path(gate).exists() and time.monotonic() < deadline:
            time.sleep(0.01)
    return {"done": execution}


@task(name="tests.chatty", bind=True)
def chatty(job, gate):
    """Wait for ``gate``, then report progress, data and a warning, and finish."""
    deadline = time.monotonic() + 30
    while not Path(gate).exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    job.progress(1, 3)
    job.data({"partial": [1, 2]})
    job.warning("careful")
    job.progress(3, 3)
    return {"answer": 42}


@task(name="tests.fail")
def fail(message="boom"):
    raise ValueError(message)


@task(name="tests.unserialisable")
def unserialisable():
    return object()


@task(name="tests.suicide")
def suicide(log_path):
    """Kill the worker process running it, every time (MAX_ATTEMPTS must end it)."""
    with open(log_path, "a") as log:
        log.write(_execution() + "\n")
    os.kill(os.getpid(), signal.SIGKILL)
