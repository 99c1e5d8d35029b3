"""gearmand's admin text protocol (``admin_command``).

Workers here are raw connections driven packet by packet, so each test
decides exactly what gearmand sees and when.
"""

from __future__ import annotations

import pytest

from django_gearattach.gearman.connection import admin_command
from django_gearattach.gearman.errors import ConnectionFailed, ProtocolError
from django_gearattach.gearman.protocol import parse_status
from tests.helpers import wait_until
from tests.rawgearman import new_function, new_key


def test_admin_status_version_and_getpid(gearmand, address, client, raw_workers):
    function = new_function()
    raw_workers(address, function)
    client.submit_background(address, function, new_key(), b"")
    client.submit_background(address, function, new_key(), b"")

    def row():
        rows = parse_status(admin_command(address, "status"))
        mine = [s for s in rows if s.function == function]
        return mine[0] if mine and mine[0].workers == 1 else None

    status = wait_until(row)
    assert (status.queued, status.running, status.workers) == (2, 0, 1)

    (version,) = admin_command(address, "version")
    assert version.startswith("OK 1.1.")
    assert admin_command(address, "getpid") == [f"OK {gearmand.pid}"]


def test_admin_unknown_command_raises_protocol_error(address):
    with pytest.raises(ProtocolError, match="ERR UNKNOWN_COMMAND"):
        admin_command(address, "no-such-command")


def test_admin_cancel_job_reply_is_a_clean_line(address, client):
    # The docstring lists "cancel job" among the one-line replies; gearmand ends that
    # reply with CRLF, which must not leak into the returned line.
    handle = client.submit_background(address, new_function(), new_key(), b"")
    assert admin_command(address, f"cancel job {handle.decode()}") == ["OK"]


def test_admin_command_on_a_closed_port_raises_connection_failed(gearmand, address):
    gearmand.stop()
    with pytest.raises(ConnectionFailed, match="cannot connect"):
        admin_command(address, "status", timeout=1.0)
