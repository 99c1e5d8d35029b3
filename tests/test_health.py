"""``health``: what each configured gearmand says about itself, against real gearmand."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator

import pytest

from django_gearattach import submit
from django_gearattach.gearman.rendezvous import Address
from django_gearattach.health import (
    FunctionQueue,
    ServerHealth,
    Unserved,
    probe,
    probe_all,
    unserved,
)
from django_gearattach.testing import free_port
from tests.rawgearman import RawWorker, new_function

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def foreign_functions(settings):
    """The functions of these tests are run by raw workers outside the project (if any)."""
    settings.GEARATTACH = {**settings.GEARATTACH, "EXTERNAL_TASKS": ["fn.*"]}


def down() -> Address:
    return Address("127.0.0.1", free_port())


def queue(health: ServerHealth, function: str) -> FunctionQueue:
    [found] = [f for f in health.functions if f.function == function]
    return found


# -- probe against real gearmand ---------------------------------------------------------


def test_an_idle_gearmand_answers_with_its_version_and_an_empty_queue(gearmand):
    health = probe(Address.parse(gearmand.address))
    assert health.reachable
    assert health.address == gearmand.address
    assert health.version.startswith("1.1.")
    assert not health.version.startswith("OK")
    assert health.functions == []
    assert health.error == ""


def test_queued_jobs_are_counted_per_function_sorted_by_name(gearmand):
    for _ in range(2):
        submit("tests.record", ["/dev/null"])
    submit("tests.add", [1, 2])
    health = probe(Address.parse(gearmand.address))
    assert [f.function for f in health.functions] == ["tests.add", "tests.record"]
    assert health.functions == [
        FunctionQueue("tests.add", total=1, running=0, workers=0),
        FunctionQueue("tests.record", total=2, running=0, workers=0),
    ]
    assert [f.waiting for f in health.functions] == [1, 2]


def test_a_registered_worker_and_a_running_job_are_reported(gearmand):
    address = Address.parse(gearmand.address)
    function = new_function()
    worker = RawWorker(address, function)
    try:
        for _ in range(3):
            submit(function)
        worker.grab()  # one job is now running (and never finishes while we look)
        health = probe(address)
    finally:
        worker.close()
    assert queue(health, function) == FunctionQueue(function, total=3, running=1, workers=1)
    assert queue(health, function).waiting == 2


def test_a_worker_without_jobs_shows_its_function_with_an_empty_queue(gearmand):
    address = Address.parse(gearmand.address)
    function = new_function()
    worker = RawWorker(address, function)
    try:
        worker.grab_once()  # a round trip: the CAN_DO has been handled
        health = probe(address)
    finally:
        worker.close()
    assert queue(health, function) == FunctionQueue(function, 0, 0, 1)


def test_an_unreachable_server_is_reported_as_such():
    address = down()
    health = probe(address, timeout=1.0)
    assert health == ServerHealth(str(address), False, error=health.error)
    assert health.version == ""
    assert health.functions == []
    assert "cannot connect" in health.error
    assert str(address) in health.error


def test_a_stopped_gearmand_is_unreachable(gearmand):
    address = Address.parse(gearmand.address)
    assert probe(address).reachable
    gearmand.stop()
    assert not probe(address, timeout=1.0).reachable


# -- probe against peers that are not gearmand -------------------------------------------


@pytest.fixture
def fake_server() -> Iterator[Callable[[Callable[[socket.socket], None]], Address]]:
    """A loopback listener that hands every connection to ``serve``."""
    listeners: list[socket.socket] = []

    def start(serve: Callable[[socket.socket], None]) -> Address:
        listener = socket.create_server(("127.0.0.1", 0))
        listeners.append(listener)

        def loop() -> None:
            while True:
                try:
                    conn, _ = listener.accept()
                except OSError:
                    return
                with conn:
                    serve(conn)

        threading.Thread(target=loop, daemon=True).start()
        return Address("127.0.0.1", listener.getsockname()[1])

    yield start
    for listener in listeners:
        listener.close()


def test_a_server_that_hangs_up_is_unreachable_with_the_reason(fake_server):
    address = fake_server(lambda conn: conn.recv(100) and None)  # reads, then hangs up
    health = probe(address, timeout=2.0)
    assert not health.reachable
    assert "closed the admin connection" in health.error


def test_a_server_that_never_answers_is_unreachable_after_the_timeout(fake_server):
    release = threading.Event()
    address = fake_server(lambda conn: release.wait(10))
    try:
        health = probe(address, timeout=0.3)
    finally:
        release.set()
    assert not health.reachable
    assert "admin command failed" in health.error


def test_a_server_whose_status_is_garbled_is_reported_not_raised(fake_server):
    def serve(conn: socket.socket) -> None:
        command = conn.recv(100)
        conn.sendall(b"OK 9.9\n" if command.startswith(b"version") else b"fn\tx\ty\tz\n.\n")

    health = probe(fake_server(serve), timeout=2.0)
    assert not health.reachable
    assert "malformed" in health.error


def test_a_status_line_with_the_wrong_number_of_fields_is_reported(fake_server):
    def serve(conn: socket.socket) -> None:
        command = conn.recv(100)
        conn.sendall(b"OK 9.9\n" if command.startswith(b"version") else b"fn\t1\n.\n")

    health = probe(fake_server(serve), timeout=2.0)
    assert not health.reachable
    assert "malformed status line" in health.error


# -- probe_all ---------------------------------------------------------------------------


def test_probe_all_answers_in_the_order_given(gearmand_factory):
    first, second = gearmand_factory(), gearmand_factory()
    gone = down()
    addresses = [Address.parse(first.address), gone, Address.parse(second.address)]
    healths = probe_all(addresses, timeout=1.0)
    assert [h.address for h in healths] == [first.address, str(gone), second.address]
    assert [h.reachable for h in healths] == [True, False, True]


def test_probe_all_of_one_or_none(gearmand):
    assert probe_all([]) == []
    [health] = probe_all([Address.parse(gearmand.address)])
    assert health.reachable


# -- FunctionQueue and unserved ----------------------------------------------------------


def test_waiting_is_total_less_running_never_negative():
    assert FunctionQueue("f", total=5, running=2, workers=1).waiting == 3
    # gearmand's counts are read at one moment; a finished job may leave running > total.
    assert FunctionQueue("f", total=1, running=2, workers=1).waiting == 0


def test_unserved_flags_functions_that_no_server_has_a_worker_for():
    healths = [
        ServerHealth("a:1", True, "1.1.20", [FunctionQueue("orphan", 3, 0, 0)]),
        ServerHealth("b:1", True, "1.1.20", [FunctionQueue("orphan", 2, 0, 0)]),
        ServerHealth("c:1", False, error="cannot connect"),
    ]
    assert unserved(healths) == [Unserved("orphan", 5, ["a:1", "b:1"])]


def test_a_worker_on_any_server_serves_a_function_everywhere():
    healths = [
        ServerHealth("a:1", True, "1.1.20", [FunctionQueue("f", 4, 0, 0)]),
        ServerHealth("b:1", True, "1.1.20", [FunctionQueue("f", 0, 0, 1)]),
    ]
    assert unserved(healths) == []


def test_running_jobs_and_idle_functions_are_not_flagged():
    healths = [
        ServerHealth(
            "a:1",
            True,
            "1.1.20",
            [FunctionQueue("busy", 2, 2, 0), FunctionQueue("idle", 0, 0, 0)],
        )
    ]
    assert unserved(healths) == []


def test_unserved_is_sorted_by_function():
    healths = [
        ServerHealth(
            "a:1", True, "1.1.20", [FunctionQueue("z", 1, 0, 0), FunctionQueue("b", 1, 0, 0)]
        )
    ]
    assert [u.function for u in unserved(healths)] == ["b", "z"]


def test_unserved_against_real_gearmand(gearmand_factory, settings):
    first, second = gearmand_factory(), gearmand_factory()
    addresses = [Address.parse(first.address), Address.parse(second.address)]
    served, orphan = new_function(), new_function()
    worker = RawWorker(addresses[1], served)
    try:
        worker.grab_once()
        settings.GEARATTACH = {**settings.GEARATTACH, "SERVERS": [str(a) for a in addresses]}
        for key in ("k1", "k2", "k3", "k4"):
            submit(served, key=key)
            submit(orphan, key=key)
        healths = probe_all(addresses)
    finally:
        worker.close()
    [flagged] = unserved(healths)
    assert flagged.function == orphan
    assert flagged.waiting == 4
    assert set(flagged.servers) <= {first.address, second.address}
    assert flagged.servers
