"""``async def`` tasks the test suite runs on the workers' event loops
(tests/worker/test_asyncrunner.py)."""

import asyncio
import os
import time
import uuid

from django_gearattach import task


def _log(log_path, line):
    with open(log_path, "a") as log:
        log.write(line + "\n")


@task(name="tests.async_nap")
async def async_nap(seconds=0.5, tag=""):
    """Awaits ``seconds``; returns when it started and ended, and in which process."""
    started = time.time()
    await asyncio.sleep(seconds)
    return {"start": started, "end": time.time(), "pid": os.getpid(), "tag": tag}


@task(name="tests.async_chatty", bind=True)
async def async_chatty(job):
    """Reports progress and data from a coroutine, then returns."""
    job.progress(1, 2)
    job.data({"partial": "half"})
    await asyncio.sleep(0.05)
    job.progress(2, 2)
    return {"answer": 42}


@task(name="tests.async_fail")
async def async_fail(message="async boom"):
    await asyncio.sleep(0.01)
    raise ValueError(message)


@task(name="tests.async_wait", bind=True)
async def async_wait(job, log_path, seconds=30.0):
    """Logs its start, awaits ``seconds``; logs its clean-up when cancelled."""
    _log(log_path, f"start-{os.getpid()}-{uuid.uuid4().hex}")
    try:
        await asyncio.sleep(seconds)
    except asyncio.CancelledError:
        _log(log_path, "cleaned-up")
        raise
    return "slept"


@task(name="tests.async_soft", soft_time_limit=0.5, time_limit=20)
async def async_soft(log_path):
    _log(log_path, "start")
    try:
        await asyncio.sleep(30)
    except asyncio.CancelledError:
        _log(log_path, "cleaned-up")
        raise


@task(name="tests.async_soft_return", soft_time_limit=0.5, time_limit=20)
async def async_soft_return(log_path):
    """Catches its soft limit's cancellation and returns what it did."""
    try:
        await asyncio.sleep(30)
    except asyncio.CancelledError:
        _log(log_path, "cleaned-up")
    return "stopped"


@task(name="tests.async_hard", time_limit=1)
async def async_hard(log_path):
    """Ignores the cancellation of its hard limit: the run ends anyway."""
    _log(log_path, "start")
    for _ in range(3):
        try:
            await asyncio.sleep(5)
        except asyncio.CancelledError:
            _log(log_path, "ignored-cancel")
    return "too late"


@task(name="tests.async_paired", concurrency=2)
async def async_paired(pause=0.4):
    """At most two run at once anywhere: returns when it started and ended."""
    started = time.time()
    await asyncio.sleep(pause)
    return {"start": started, "end": time.time()}


@task(name="tests.async_metered", rate_limit="4/s")
async def async_metered():
    return time.time()


@task(name="tests.async_rebuild", on_conflict="follow_up")
async def async_rebuild(log_path, gate="", tag=""):
    """Waits for ``gate`` (a file) without blocking the loop; returns its tag."""
    from pathlib import Path

    _log(log_path, f"start-{tag}")
    for _ in range(600):
        if not gate or Path(gate).exists():
            break
        await asyncio.sleep(0.02)
    return {"tag": tag}


@task(name="tests.async_blocking", time_limit=1)
async def async_blocking(seconds=1.5):
    """Blocks the loop (wrongly) past its hard limit, then awaits: stopped at the await."""
    time.sleep(seconds)
    await asyncio.sleep(5)
    return "not stopped"


@task(name="tests.async_streamer", bind=True)
async def async_streamer(job, count, pause=0.005):
    """Streams ``count`` chunks "a1 ".."aN " from a coroutine, with ``job.astream``
    and ``job.stream`` alternating."""
    for number in range(1, count + 1):
        if number % 2:
            await job.astream(f"a{number} ")
        else:
            job.stream(f"a{number} ")
        await asyncio.sleep(pause)
    return {"chunks": count}
