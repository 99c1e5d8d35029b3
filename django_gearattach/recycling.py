"""Recycling worker processes: after N jobs, or once they use too much memory.

``gearworker --max-jobs-per-child N`` and ``--max-memory-per-child MB`` bound what a
leaking task can cost. The check comes after a job, never during one: the process
finishes its job (and one it grabbed ahead, whose running mark is committed), reports
it, closes its connections, and exits; the supervisor starts a new one at once. A job
is never dropped by recycling, and none runs twice: gearmand hands out only jobs a
process asked for, and a process that is about to exit asks for no more.
"""

from __future__ import annotations

import os
import resource
import sys
from collections.abc import Callable

#: The exit status of a process that recycled itself (the supervisor starts another).
RECYCLED = 0
#: The exit status of a process its watchdog ended to stop a job.
ENDED_BY_WATCHDOG = 3


def resident_megabytes() -> float:
    """This process's resident memory now (Linux), else its peak so far."""
    try:
        with open("/proc/self/statm") as statm:
            pages = int(statm.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


def memory_check(limit_mb: int | None) -> Callable[[], bool] | None:
    """A check for :attr:`Worker.recycle_after`: True once memory exceeds ``limit_mb``."""
    if limit_mb is None:
        return None

    def over() -> bool:
        return resident_megabytes() > limit_mb

    return over
