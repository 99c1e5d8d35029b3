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


def _log(log_path, line):
    with open(log_path, "a") as log:
        log.write(line + "\n")


@task(name="tests.sleep_soft", soft_time_limit=0.5, time_limit=20)
def sleep_soft(log_path):
    """Sleeps past its soft limit, catches it, cleans up (a line) and raises it again."""
    from django_gearattach import SoftTimeLimitExceeded

    _log(log_path, _execution())
    try:
        time.sleep(30)
    except SoftTimeLimitExceeded:
        _log(log_path, "cleaned-up")
        raise
    return "slept"


@task(name="tests.read_soft", soft_time_limit=0.5, time_limit=20)
def read_soft(log_path):
    """Blocks in a socket read (in C) that nothing ever answers."""
    import socket

    _log(log_path, _execution())
    left, right = socket.socketpair()
    with left, right:
        left.recv(1)
    return "read"


@task(name="tests.spin_hard", time_limit=1)
def spin_hard(log_path):
    """Spins in pure Python past its hard limit, catching everything it can."""
    _log(log_path, _execution())
    while True:
        try:
            while True:
                pass
        except BaseException:  # the hard limit cannot be caught
            continue


@task(name="tests.c_sleep_hard", time_limit=1)
def c_sleep_hard(log_path):
    """Sleeps inside a C call (libc's sleep through ctypes) past its hard limit."""
    import ctypes

    _log(log_path, _execution())
    libc = ctypes.CDLL(None)
    libc.sleep(30)
    return "woke"


@task(name="tests.default_limits")
def default_limits(log_path):
    """No limits of its own: GEARATTACH["SOFT_TIME_LIMIT"] applies."""
    _log(log_path, _execution())
    time.sleep(30)
    return "slept"


@task(name="tests.cancellable", bind=True)
def cancellable(job, log_path):
    """Reports progress until cancelled; cleans up (a line) and raises."""
    from django_gearattach import JobCancelled

    _log(log_path, _execution())
    step = 0
    try:
        while True:
            step += 1
            job.progress(step, 0)
            time.sleep(0.05)
    except JobCancelled:
        _log(log_path, "cleaned-up")
        raise


@task(name="tests.stubborn", bind=True)
def stubborn(job, log_path):
    """Never reports: only the grace period's end stops it."""
    _log(log_path, _execution())
    seen = False
    for _ in range(600):
        if job.cancelled and not seen:
            seen = True
            _log(log_path, "saw-cancel")
        time.sleep(0.05)
    return "ignored"


@task(name="tests.paired", concurrency=2)
def paired(log_path, pause=0.2):
    """At most two run at once anywhere: each logs its start and its end."""
    _log(log_path, f"start-{_execution()}")
    time.sleep(pause)
    _log(log_path, f"end-{_execution()}")


@task(name="tests.metered", rate_limit="5/s")
def metered(log_path):
    _log(log_path, f"{time.time():.6f}")


@task(name="tests.spin_soft", soft_time_limit=0.5, time_limit=20)
def spin_soft(log_path):
    """Spins in pure Python; catches its soft limit and returns what it did."""
    from django_gearattach import SoftTimeLimitExceeded

    _log(log_path, _execution())
    spins = 0
    try:
        while True:
            spins += 1
    except SoftTimeLimitExceeded:
        _log(log_path, "cleaned-up")
    return "stopped"


def _probe(job, log_path, gate=None, steps=0, pause=0.02, tag="", deaf=False):
    """Logs ``start``, then ``end`` (or ``cancelled``) with the time, pid and ``tag``.

    Reports ``steps`` steps of progress ``pause`` seconds apart (a cancel stops it at
    the next one), then waits for ``gate`` to exist (``deaf``: paying no attention to
    a cancel). The key policy tests use it.
    """
    from django_gearattach import JobCancelled

    _log(log_path, f"start {time.time():.6f} {os.getpid()} {tag}")
    try:
        for step in range(steps):
            job.progress(step + 1, steps)
            time.sleep(pause)
        deadline = time.monotonic() + 30
        while gate and not Path(gate).exists() and time.monotonic() < deadline:
            if job.cancelled and not deaf:
                raise JobCancelled("cancelled while waiting for the gate")
            time.sleep(0.01)
    except JobCancelled:
        _log(log_path, f"cancelled {time.time():.6f} {os.getpid()} {tag}")
        raise
    _log(log_path, f"end {time.time():.6f} {os.getpid()} {tag}")
    return {"tag": tag}


probe = task(name="tests.probe", bind=True)(_probe)
rebuild = task(name="tests.rebuild", bind=True, on_conflict="follow_up")(_probe)
preview = task(name="tests.preview", bind=True, on_conflict="replace")(_probe)
report = task(name="tests.report", bind=True, max_age=2, stale_while_revalidate=60)(_probe)


@task(name="tests.fail_after")
def fail_after(gate, message):
    """Waits for ``gate`` to exist, then raises ValueError(message)."""
    deadline = time.monotonic() + 30
    while not Path(gate).exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    raise ValueError(message)


@task(name="tests.solo", concurrency=1)
def solo(log_path, pause=1.0):
    """At most one runs at once anywhere: logs its start and end with the time."""
    _log(log_path, f"start {time.time():.6f} {os.getpid()}")
    time.sleep(pause)
    _log(log_path, f"end {time.time():.6f} {os.getpid()}")


@task(name="tests.gated_limit", time_limit=3)
def gated_limit(log_path, gate):
    """Waits for ``gate`` (a hard limit of 3 s), then returns."""
    _log(log_path, _execution())
    deadline = time.monotonic() + 30
    while not Path(gate).exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    return "opened"


@task(name="tests.traced", bind=True)
def traced(job):
    """Reads the database inside a span of its own, and reports (tests/tracing/)."""
    from django.contrib.auth.models import User
    from opentelemetry import trace

    with trace.get_tracer("tests").start_as_current_span("inside the task"):
        User.objects.count()
    job.progress(1, 2)
    job.data({"stage": "half"})
    return "traced"


@task(name="tests.streamer", bind=True)
def streamer(job, count, gate=None, at=0, pause=0.0, log_path=None):
    """Stream ``count`` chunks "w1 ".."wN "; wait for ``gate`` after chunk ``at``.

    With ``log_path``, the run appends its pid first (a test kills it mid-stream).
    """
    if log_path:
        _log(log_path, str(os.getpid()))
    for number in range(1, count + 1):
        job.stream(f"w{number} ")
        if gate and number == at:
            deadline = time.monotonic() + 30
            while not Path(gate).exists() and time.monotonic() < deadline:
                time.sleep(0.01)
        elif pause:
            time.sleep(pause)
    return {"chunks": count}


from tests.testapp import async_tasks  # noqa: E402, F401  (registers the async def tasks)
