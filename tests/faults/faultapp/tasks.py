"""``faults.body``: log the job's key, sleep a little, log it again.

The log (``GAF_EXECUTIONS``, one file shared by every simulated host) gets ``KEY start``
when a task body begins and ``KEY end`` when it returns (then the host, the process
and the time), so a key with two ``start``
lines ran twice, and one with two ``end`` lines ran to the end twice.
"""

import os
import time

from django_gearattach import task


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
