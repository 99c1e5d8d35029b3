"""Parking for foreground connections that cannot be closed yet.

gearmand silently drops a job that has not started when its last foreground client
disconnects (GEARMAN_FACTS.md, "the abandoned-job trap"). An attacher that gives up
while its job is queued (for instance after the job's worker died and gearmand
requeued it) hands its connection here instead of closing it. One daemon thread per
process checks the parked jobs and closes each connection once its job is running or
gone, so no attacher can make a job vanish by leaving.
"""

from __future__ import annotations

import contextlib
import threading
import time

from .connection import Connection
from .errors import GearmanError
from .protocol import Command

CHECK_INTERVAL = 0.25

_lock = threading.Lock()
_parked: list[tuple[Connection, bytes]] = []
_thread: threading.Thread | None = None


def park(conn: Connection, unique: bytes) -> None:
    """Keep ``conn`` open until the job with ``unique`` is running or has ended."""
    global _thread
    with _lock:
        _parked.append((conn, unique))
        if _thread is None or not _thread.is_alive():
            _thread = threading.Thread(target=_run, name="gearattach-linger", daemon=True)
            _thread.start()


def parked_count() -> int:
    with _lock:
        return len(_parked)


def _safe_to_close(conn: Connection, unique: bytes) -> bool:
    probe = Connection(conn.address, timeout=5.0)
    try:
        reply = probe.request(Command.GET_STATUS_UNIQUE, unique, reply=Command.STATUS_RES_UNIQUE)
    except GearmanError:
        return not conn.connected
    finally:
        probe.close()
    known, running = reply.args[1] == b"1", reply.args[2] == b"1"
    return not known or running


def _drain(conn: Connection) -> None:
    # Discard whatever the server sends so its buffers never fill.
    with contextlib.suppress(GearmanError):
        while conn.connected and conn.read_packet(0) is not None:
            pass


def _run() -> None:
    global _thread
    while True:
        with _lock:
            items = list(_parked)
            if not items:
                _thread = None
                return
        for conn, unique in items:
            _drain(conn)
            if not conn.connected or _safe_to_close(conn, unique):
                conn.close()
                with _lock:
                    _parked.remove((conn, unique))
        time.sleep(CHECK_INTERVAL)
