"""Parking for foreground connections that cannot be closed yet.

gearmand silently drops a job that has not started when its last foreground client
disconnects (GEARMAN_FACTS.md, "the abandoned-job trap"). An attacher that gives up
while its job may still be queued hands its connection here instead of closing it.
One daemon thread per process keeps the parked connections open and closes each
once none of its jobs can be dropped any more:

* at once when a job's start or end arrives on the connection (this app's workers
  send an empty ``WORK_DATA`` when a job starts), and
* otherwise when ``GET_STATUS_UNIQUE``, asked at parking time and then every
  :data:`CHECK_INTERVAL` seconds, says the job is running or gone (a foreign
  worker that sends nothing at start).

The parked connections live as long as the process: a process that exits or is
killed while a job is parked here leaves that job to the recovery sweep.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from .connection import Connection
from .errors import GearmanError
from .protocol import Command, Priority, encode, submit_command
from .rendezvous import Address

logger = logging.getLogger("django_gearattach.gearman")

#: Seconds between two status checks of a parked job that sent nothing.
CHECK_INTERVAL = 1.0

_STARTED_OR_ENDED = frozenset(
    {
        Command.WORK_DATA,
        Command.WORK_STATUS,
        Command.WORK_WARNING,
        Command.WORK_COMPLETE,
        Command.WORK_FAIL,
        Command.WORK_EXCEPTION,
    }
)


@dataclass(eq=False)
class _Parked:
    conn: Connection
    jobs: dict[bytes, bytes]  # handle -> unique, of the jobs that may still be queued
    checked: float = field(default=0.0)


_lock = threading.Lock()
_parked: list[_Parked] = []
_thread: threading.Thread | None = None
_wake_r, _wake_w = -1, -1


def park(conn: Connection, jobs: dict[bytes, bytes]) -> None:
    """Keep ``conn`` open until every job in ``jobs`` (handle: unique) runs or ends."""
    global _thread, _wake_r, _wake_w
    with _lock:
        _parked.append(_Parked(conn, dict(jobs)))
        if _thread is None or not _thread.is_alive():
            if _wake_r < 0:
                _wake_r, _wake_w = os.pipe()
                os.set_blocking(_wake_r, False)
            _thread = threading.Thread(target=_run, name="gearattach-linger", daemon=True)
            _thread.start()
        else:
            with contextlib.suppress(OSError):
                os.write(_wake_w, b"x")


def adopt(
    address: Address,
    jobs: Iterable[tuple[str, bytes, bytes, Priority | str]],
    timeout: float | None = 10.0,
) -> None:
    """Join each (function, unique, data, priority) on a new connection, then park it.

    For a connection that must close while it holds foreground attachments (an
    event loop shutting down): the new connection joins every job first, so the
    old one is never the job's last foreground client. A job that ended meanwhile
    becomes an attach-marker job, which a worker answers from the record.
    """
    items = list(jobs)
    if not items:
        return
    conn = Connection(address, timeout)
    try:
        conn.send_bytes(
            b"".join(
                encode(submit_command(priority, background=False), function, unique, data)
                for function, unique, data, priority in items
            )
        )
        handles: dict[bytes, bytes] = {}
        while len(handles) < len(items):
            packet = conn.read_packet()
            assert packet is not None
            if packet.command is Command.JOB_CREATED:
                handles[packet.args[0]] = items[len(handles)][1]
            elif packet.command is Command.ERROR:
                raise GearmanError(packet.args[1].decode(errors="replace"))
            # WORK_* of a job joined a moment ago: the status check settles it.
    except BaseException:
        conn.close()
        raise
    park(conn, handles)


def parked_count() -> int:
    """Parked jobs not yet known to be safe (the tests' view into the parking)."""
    with _lock:
        return sum(len(p.jobs) for p in _parked)


def _read_events(item: _Parked) -> None:
    with contextlib.suppress(GearmanError):
        while item.conn.connected:
            packet = item.conn.read_packet(0)
            if packet is None:
                return
            if packet.command in _STARTED_OR_ENDED:
                item.jobs.pop(packet.args[0].rstrip(b"\0"), None)


def _check(items: list[_Parked], probes: dict[Address, Connection]) -> None:
    """Ask GET_STATUS_UNIQUE about every parked job of ``items``, pipelined per server."""
    by_address: dict[Address, list[tuple[_Parked, bytes]]] = {}
    for item in items:
        for handle in item.jobs:
            by_address.setdefault(item.conn.address, []).append((item, handle))
    for address, asked in by_address.items():
        probe = probes.get(address) or probes.setdefault(address, Connection(address, 5.0))
        try:
            probe.send_bytes(
                b"".join(encode(Command.GET_STATUS_UNIQUE, item.jobs[h]) for item, h in asked)
            )
            for item, handle in asked:
                reply = probe.read_packet()
                assert reply is not None
                known, running = reply.args[1] == b"1", reply.args[2] == b"1"
                if not known or running:
                    item.jobs.pop(handle, None)
        except GearmanError:
            probe.close()  # unreachable: keep the jobs parked, ask again later


def _run() -> None:
    global _thread
    probes: dict[Address, Connection] = {}
    try:
        while True:
            now = time.monotonic()
            with _lock:
                items = list(_parked)
            due = [item for item in items if now - item.checked >= CHECK_INTERVAL]
            if due:
                _check(due, probes)
                for item in due:
                    item.checked = now
            with _lock:
                for item in list(_parked):
                    if not item.jobs or not item.conn.connected:
                        item.conn.close()
                        _parked.remove(item)
                items = list(_parked)
                if not items:
                    _thread = None
                    return
            wait = max(0.0, min(i.checked for i in items) + CHECK_INTERVAL - time.monotonic())
            try:
                ready, _, _ = select.select(
                    [_wake_r, *(i.conn.fileno() for i in items)], [], [], wait
                )
            except (OSError, ValueError, GearmanError):
                ready = []
            if _wake_r in ready:
                with contextlib.suppress(OSError):
                    os.read(_wake_r, 4096)
            for item in items:
                _read_events(item)
    except Exception:  # never let a bug here close parked connections silently
        logger.exception("gearattach linger thread failed")
        with _lock:
            _thread = None
    finally:
        for probe in probes.values():
            probe.close()
