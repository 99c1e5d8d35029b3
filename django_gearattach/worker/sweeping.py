"""The recovery sweep of a worker process, on a thread of its own.

Every ``gearworker`` process runs one: it tries for the ``recovery-leader`` lock and,
while it holds it, sweeps every ``RECOVERY_INTERVAL`` (:class:`~.recovery.Sweeper`).
On its own thread the sweep does not wait for the process's job: a leader that runs
an hour-long job still recovers what gearmand lost within ``RECOVERY_INTERVAL`` plus
``RECOVERY_GRACE``. The thread has its own database connection (on PostgreSQL the
leader lock lives on it), drops it when it breaks, and gives the lock up when the
worker stops.
"""

from __future__ import annotations

import threading

from django.db import connections

from .. import records
from ..conf import conf
from .recovery import Sweeper

#: The longest pause between two looks at whether a sweep is due.
LOOK_EVERY = 1.0


class SweepThread:
    """Runs ``sweeper.run_if_due()`` on a daemon thread until :meth:`stop`."""

    def __init__(self, sweeper: Sweeper) -> None:
        self.sweeper = sweeper
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="gearattach-sweep", daemon=True)

    def start(self) -> SweepThread:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopped.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)

    def _loop(self) -> None:
        try:
            while not self._stopped.wait(min(LOOK_EVERY, conf.RECOVERY_INTERVAL / 2)):
                self.sweeper.run_if_due()  # logs its own errors, never raises
                records.drop_broken_connections()
        finally:
            self.sweeper.close()
            connections.close_all()
