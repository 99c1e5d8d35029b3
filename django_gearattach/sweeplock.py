"""A lock shared by every process on one database, for the recovery sweep.

On PostgreSQL it is a session-level advisory lock (``pg_try_advisory_lock``), so it
is shared by every host and released by the server when the process (or its
connection) dies. On other databases it is a ``flock`` on a file in the temporary
directory, named after the database: one holder per host.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import tempfile
import time
import zlib
from typing import Any

from django.db import connections, router

from .models import Job


class SweepLock:
    """A named lock; :meth:`acquire` does not block past ``wait`` seconds."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._alias = router.db_for_write(Job)
        self._held_on: Any = None  # PostgreSQL: the DB-API connection that holds it
        self._fd: int | None = None

    @property
    def _postgres(self) -> bool:
        return bool(connections[self._alias].vendor == "postgresql")

    def _key(self) -> int:
        conn = connections[self._alias]
        text = f"gearattach:{self.name}:{conn.settings_dict['NAME']}:{Job._meta.db_table}"
        return zlib.crc32(text.encode())  # fits PostgreSQL's bigint key

    def held(self) -> bool:
        if self._postgres:
            conn = connections[self._alias]
            return self._held_on is not None and conn.connection is self._held_on
        return self._fd is not None

    def acquire(self, wait: float = 0.0) -> bool:
        """Take the lock (True), or give up after ``wait`` seconds (False)."""
        if self.held():
            return True
        deadline = time.monotonic() + wait
        while True:
            if self._try():
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.1)

    def _try(self) -> bool:
        if self._postgres:
            conn = connections[self._alias]
            with conn.cursor() as cursor:
                cursor.execute("SELECT pg_try_advisory_lock(%s)", [self._key()])
                (taken,) = cursor.fetchone()
            if taken:
                self._held_on = conn.connection
            return bool(taken)
        name = hashlib.sha256(
            f"{connections[self._alias].settings_dict['NAME']}:{Job._meta.db_table}".encode()
        ).hexdigest()[:16]
        path = os.path.join(tempfile.gettempdir(), f"gearattach-{self.name}-{name}.lock")
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._fd = fd
        return True

    def release(self) -> None:
        if self._postgres:
            if self.held():
                with connections[self._alias].cursor() as cursor:
                    cursor.execute("SELECT pg_advisory_unlock(%s)", [self._key()])
            self._held_on = None
            return
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
