"""The blocking connection (gearman/connection.py) against a real gearmand."""

from __future__ import annotations

import threading

from django_gearattach.gearman.connection import Connection
from django_gearattach.gearman.protocol import Command
from django_gearattach.gearman.rendezvous import Address


def test_packets_sent_from_two_threads_never_interleave(address: Address) -> None:
    """A worker's watchdog sends on the connection its loop uses: every packet must
    leave whole. Large packets make each sendall() take several system calls, between
    which another thread's would slip in without the connection's send lock."""
    payloads = [bytes([65 + n]) * (3 * 2**20) for n in range(8)]
    with Connection(address, timeout=30) as conn:
        threads = [
            threading.Thread(target=conn.send, args=(Command.ECHO_REQ, payload))
            for payload in payloads
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        echoed = [conn.read_packet() for _ in payloads]
    assert all(packet is not None and packet.command is Command.ECHO_RES for packet in echoed)
    assert sorted(packet.args[0] for packet in echoed if packet is not None) == payloads
