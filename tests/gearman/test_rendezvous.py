"""Server addresses and rendezvous hashing of (function, key) onto servers."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from django_gearattach.gearman.rendezvous import DEFAULT_PORT, Address, parse_addresses, route

SERVERS = [Address("10.0.0.1", 4730), Address("10.0.0.2", 4730), Address("10.0.0.3", 4731)]
KEYS = [f"key-{i}" for i in range(3000)]


def homes(servers, keys=KEYS, function="tests.add"):
    return {key: route(servers, function, key)[0] for key in keys}


# -- Address ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "host", "port"),
    [
        ("gearman.example.com", "gearman.example.com", DEFAULT_PORT),
        ("127.0.0.1:4731", "127.0.0.1", 4731),
        ("  127.0.0.1:4731  ", "127.0.0.1", 4731),
        ("localhost:1", "localhost", 1),
        ("localhost:65535", "localhost", 65535),
        ("[::1]:4732", "::1", 4732),
        ("[fe80::1:2]", "fe80::1:2", DEFAULT_PORT),
    ],
)
def test_address_parse(text, host, port):
    address = Address.parse(text)
    assert address == Address(host, port)
    assert Address.parse(str(address)) == address


def test_address_str():
    assert DEFAULT_PORT == 4730
    assert str(Address("127.0.0.1", 4731)) == "127.0.0.1:4731"
    assert str(Address("::1", 4732)) == "[::1]:4732"
    assert str(Address.parse("example.com")) == "example.com:4730"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "must be a 'host:port' string"),
        ("   ", "must be a 'host:port' string"),
        (None, "must be a 'host:port' string"),
        (4730, "must be a 'host:port' string"),
        (":4730", "has no host"),
        ("[]:4730", "has no host"),
        ("host:", "non-numeric port"),
        ("host:http", "non-numeric port"),
        ("host:0", "out of range"),
        ("host:-1", "out of range"),
        ("host:65536", "out of range"),
        ("::1", r"write IPv6 gearmand addresses as \[host\]:port"),
        ("fe80::1:4730", r"write IPv6 gearmand addresses as \[host\]:port"),
        ("[::1", "malformed IPv6"),
        ("[::1]4730", "malformed IPv6"),
        ("[::1]:", "non-numeric port"),
        ("[::1]:99999", "out of range"),
    ],
)
def test_address_parse_refuses_malformed_input(text, message):
    with pytest.raises(ValueError, match=message):
        Address.parse(text)


def test_parse_addresses():
    assert parse_addresses(["a:1", "b", "[::1]:3"]) == [
        Address("a", 1),
        Address("b", DEFAULT_PORT),
        Address("::1", 3),
    ]


def test_parse_addresses_refuses_an_empty_list():
    with pytest.raises(ValueError, match="at least one gearmand address"):
        parse_addresses([])


def test_parse_addresses_reports_the_bad_item():
    with pytest.raises(ValueError, match="'b:x'"):
        parse_addresses(["a:1", "b:x"])


# -- route -----------------------------------------------------------------------------


def test_route_returns_every_server_once():
    for key in KEYS[:200]:
        order = route(SERVERS, "tests.add", key)
        assert sorted(order) == sorted(SERVERS)


def test_route_with_one_server():
    assert route(SERVERS[:1], "tests.add", "anything") == SERVERS[:1]


def test_route_is_deterministic_and_independent_of_input_order():
    first = {key: route(SERVERS, "tests.add", key) for key in KEYS[:500]}
    rng = random.Random(1234)
    for _ in range(5):
        shuffled = SERVERS[:]
        rng.shuffle(shuffled)
        again = {key: route(shuffled, "tests.add", key) for key in KEYS[:500]}
        assert again == first
    # str and bytes keys route the same, and addresses parsed from text are equal ones.
    parsed = parse_addresses([str(s) for s in reversed(SERVERS)])
    assert all(route(parsed, "tests.add", k.encode()) == first[k] for k in KEYS[:500])


def test_route_depends_on_the_function_too():
    by_add = homes(SERVERS, function="tests.add")
    by_record = homes(SERVERS, function="tests.record")
    differing = sum(by_add[k] != by_record[k] for k in KEYS)
    # Independent hashes: about two thirds of the keys land elsewhere.
    assert 0.5 * len(KEYS) < differing < 0.8 * len(KEYS)


def test_route_spreads_keys_evenly():
    counts = Counter(homes(SERVERS).values())
    assert set(counts) == set(SERVERS)
    for server in SERVERS:
        share = counts[server] / len(KEYS)
        assert 0.25 <= share <= 0.42, (server, share)


def test_removing_a_server_moves_only_its_keys():
    before = homes(SERVERS)
    removed = SERVERS[1]
    after = homes([s for s in SERVERS if s != removed])
    moved = {k for k in KEYS if before[k] != after[k]}
    assert moved == {k for k in KEYS if before[k] == removed}
    # And they are spread over the remaining servers, in the order route() gave as fallback.
    for key in moved:
        assert after[key] == route(SERVERS, "tests.add", key)[1]


def test_adding_a_server_moves_about_a_quarter_of_the_keys_all_to_it():
    before = homes(SERVERS)
    new = Address("10.0.0.4", 4730)
    after = homes([*SERVERS, new])
    moved = [k for k in KEYS if before[k] != after[k]]
    assert all(after[k] == new for k in moved)
    assert 0.18 <= len(moved) / len(KEYS) <= 0.32, len(moved)
