"""The sans-IO codec: packets and admin replies, without any socket."""

from __future__ import annotations

import struct

import pytest

from django_gearattach.gearman.errors import ProtocolError
from django_gearattach.gearman.protocol import (
    ARITY,
    MAX_PACKET_BYTES,
    MAX_UNIQUE_BYTES,
    REQ,
    RES,
    Command,
    FunctionStatus,
    Packet,
    PacketParser,
    Priority,
    TextReplyParser,
    check_unique,
    encode,
    parse_status,
    submit_command,
)


def sample_args(command: Command) -> tuple[bytes, ...]:
    return tuple(f"{command.name.lower()}-{i}".encode() for i in range(ARITY[command]))


def parse_all(data: bytes, magic: bytes = RES) -> list[Packet]:
    parser = PacketParser(magic)
    parser.feed(data)
    return parser.packets()


# -- encode ----------------------------------------------------------------------------


def test_the_protocol_numbers_match_the_specification():
    # A typo here would make every request something else on the wire.
    assert {c.name: c.value for c in Command if c.name.startswith("SUBMIT")} == {
        "SUBMIT_JOB": 7,
        "SUBMIT_JOB_BG": 18,
        "SUBMIT_JOB_HIGH": 21,
        "SUBMIT_JOB_HIGH_BG": 32,
        "SUBMIT_JOB_LOW": 33,
        "SUBMIT_JOB_LOW_BG": 34,
        "SUBMIT_JOB_EPOCH": 36,
    }
    assert Command.GET_STATUS_UNIQUE.value == 41
    assert Command.STATUS_RES_UNIQUE.value == 42
    assert Command.GRAB_JOB_UNIQ.value == 30
    assert Command.JOB_ASSIGN_UNIQ.value == 31
    assert set(ARITY) == set(Command)


@pytest.mark.parametrize("command", list(ARITY), ids=lambda c: c.name)
def test_encode_writes_header_and_nul_separated_body(command):
    args = sample_args(command)
    packet = encode(command, *args)
    magic, ctype, size = struct.unpack(">4sII", packet[:12])
    body = packet[12:]
    assert magic == b"\0REQ"
    assert ctype == command.value
    assert size == len(body)
    assert body == b"\0".join(args)
    assert (body.count(b"\0") if body else -1) == len(args) - 1


@pytest.mark.parametrize("command", list(ARITY), ids=lambda c: c.name)
def test_every_command_round_trips_fed_one_byte_at_a_time(command):
    args = sample_args(command)
    data = encode(command, *args, magic=RES)
    assert data[:4] == b"\0RES"
    parser = PacketParser()
    seen = []
    for i in range(len(data)):
        parser.feed(data[i : i + 1])
        seen.extend(parser.packets())
        if i < len(data) - 1:
            assert seen == [], f"a packet came out after {i + 1} of {len(data)} bytes"
    assert seen == [Packet(command, args)]
    assert parser.next_packet() is None


def test_encode_accepts_str_and_int_arguments():
    data = encode(Command.WORK_STATUS, "H:host:1", 3, 10, magic=RES)
    assert data[12:] == b"H:host:1\x003\x0010"
    assert parse_all(data) == [Packet(Command.WORK_STATUS, (b"H:host:1", b"3", b"10"))]


def test_a_request_parser_reads_req_packets():
    data = encode(Command.SUBMIT_JOB_BG, "f", b"u", b"d")
    assert parse_all(data, REQ) == [Packet(Command.SUBMIT_JOB_BG, (b"f", b"u", b"d"))]


def test_several_packets_in_one_feed_come_out_in_order():
    data = (
        encode(Command.JOB_CREATED, b"H:x:1", magic=RES)
        + encode(Command.NOOP, magic=RES)
        + encode(Command.WORK_DATA, b"H:x:1", b"partial", magic=RES)
        + encode(Command.WORK_COMPLETE, b"H:x:1", b"", magic=RES)
    )
    # Plus the first half of a fifth packet, which must wait for the rest.
    tail = encode(Command.ECHO_RES, b"ping", magic=RES)
    parser = PacketParser()
    parser.feed(data + tail[:7])
    assert parser.packets() == [
        Packet(Command.JOB_CREATED, (b"H:x:1",)),
        Packet(Command.NOOP, ()),
        Packet(Command.WORK_DATA, (b"H:x:1", b"partial")),
        Packet(Command.WORK_COMPLETE, (b"H:x:1", b"")),
    ]
    parser.feed(tail[7:])
    assert parser.packets() == [Packet(Command.ECHO_RES, (b"ping",))]


def test_the_last_argument_may_contain_nul_bytes():
    payload = b"\0binary\0\0result\0"
    data = encode(Command.WORK_COMPLETE, b"H:x:9", payload, magic=RES)
    (packet,) = parse_all(data)
    assert packet.args == (b"H:x:9", payload)
    assert packet.arg(1) == payload

    data = encode(Command.JOB_ASSIGN_UNIQ, b"H:x:9", b"func", b"key", b"a\0b", magic=RES)
    assert parse_all(data)[0].args == (b"H:x:9", b"func", b"key", b"a\0b")


@pytest.mark.parametrize("position", [0, 1])
def test_nul_in_an_argument_other_than_the_last_is_refused(position):
    args = [b"func", b"key", b"data"]
    args[position] = b"bad\0value"
    with pytest.raises(ProtocolError, match="only the last argument"):
        encode(Command.SUBMIT_JOB, *args)


@pytest.mark.parametrize(
    ("command", "args"),
    [
        (Command.SUBMIT_JOB, (b"f", b"u")),
        (Command.SUBMIT_JOB, (b"f", b"u", b"d", b"extra")),
        (Command.NOOP, (b"x",)),
        (Command.WORK_FAIL, ()),
        (Command.SUBMIT_JOB_EPOCH, (b"f", b"u", b"d")),
    ],
)
def test_encode_with_the_wrong_number_of_arguments_raises(command, args):
    with pytest.raises(ProtocolError, match=f"{command.name} takes {ARITY[command]}"):
        encode(command, *args)


# -- parser errors ---------------------------------------------------------------------


def test_bad_magic_raises():
    # A client receives \0RES; a \0REQ packet (or anything else) is a protocol error.
    with pytest.raises(ProtocolError, match="bad packet magic"):
        parse_all(encode(Command.ECHO_REQ, b"x"))
    with pytest.raises(ProtocolError, match="bad packet magic"):
        parse_all(b"\0XYZ" + struct.pack(">II", 17, 0))


def test_a_text_reply_where_a_packet_was_expected_raises():
    with pytest.raises(ProtocolError, match="text reply"):
        parse_all(b"ERR unknown_command Unknown+server+command\n")


def test_unknown_packet_type_raises():
    with pytest.raises(ProtocolError, match="unknown packet type 99"):
        parse_all(struct.pack(">4sII", RES, 99, 3) + b"abc")


def test_oversize_packet_raises_from_the_header_alone():
    parser = PacketParser()
    parser.feed(struct.pack(">4sII", RES, Command.WORK_DATA, MAX_PACKET_BYTES + 1))
    with pytest.raises(ProtocolError, match="exceeds the limit"):
        parser.next_packet()


def test_a_packet_of_exactly_the_limit_is_only_waited_for():
    parser = PacketParser()
    parser.feed(struct.pack(">4sII", RES, Command.WORK_DATA, MAX_PACKET_BYTES) + b"H\0")
    assert parser.next_packet() is None


@pytest.mark.parametrize(
    ("command", "body"),
    [
        (Command.WORK_STATUS, b"H:x:1\x001"),
        (Command.JOB_ASSIGN_UNIQ, b"H:x:1\0func\0key"),
        (Command.STATUS_RES_UNIQUE, b"key\x001\x000\x000\x000"),
        (Command.WORK_COMPLETE, b"H:x:1"),
    ],
)
def test_a_received_packet_with_too_few_arguments_raises(command, body):
    data = struct.pack(">4sII", RES, command, len(body)) + body
    with pytest.raises(ProtocolError, match=f"{command.name} carries"):
        parse_all(data)


def test_a_one_argument_packet_keeps_its_nul_bytes():
    # gearmand 1.1.20 sends WORK_FAIL with a trailing NUL after the handle (the client
    # strips it); the codec itself must not lose or reject it.
    body = b"H:x:1\0"
    (packet,) = parse_all(struct.pack(">4sII", RES, Command.WORK_FAIL, len(body)) + body)
    assert packet == Packet(Command.WORK_FAIL, (b"H:x:1\0",))


# -- unique keys and submit commands ---------------------------------------------------


def test_check_unique_accepts_up_to_63_bytes():
    assert MAX_UNIQUE_BYTES == 63
    assert check_unique(b"k") == b"k"
    assert check_unique(b"a" * 63) == b"a" * 63
    assert check_unique("é".encode() * 31 + b"x") == "é".encode() * 31 + b"x"
    assert check_unique("report 2024/Q1 (ü, 日本)".encode()) == "report 2024/Q1 (ü, 日本)".encode()


@pytest.mark.parametrize(
    ("unique", "message"),
    [
        (b"", "must not be empty"),
        (b"ab\0cd", "NUL"),
        (b"\0", "NUL"),
        (b"a" * 64, "at most 63 bytes, got 64"),
        (b"a" * 65, "at most 63 bytes, got 65"),
        ("é".encode() * 32, "at most 63 bytes, got 64"),
        # Control characters forge log lines and fool terminals (review 3, finding 10).
        (b"x] complete\njob admin.reset_all_passw", "control characters"),
        (b"a\rb", "control characters"),
        (b"a\tb", "control characters"),
        (b"\x1b[31mred", "control characters"),
        (b"a\x7fb", "control characters"),
        ("a\u2028b".encode(), "control characters"),  # LINE SEPARATOR
        ("a\u0085b".encode(), "control characters"),  # NEXT LINE (C1)
        ("evil\u202etxt.exe".encode(), "control characters"),  # RIGHT-TO-LEFT OVERRIDE
    ],
)
def test_check_unique_refuses(unique, message):
    with pytest.raises(ValueError, match=message):
        check_unique(unique)


@pytest.mark.parametrize(
    ("priority", "background", "expected"),
    [
        (Priority.HIGH, False, Command.SUBMIT_JOB_HIGH),
        (Priority.NORMAL, False, Command.SUBMIT_JOB),
        (Priority.LOW, False, Command.SUBMIT_JOB_LOW),
        (Priority.HIGH, True, Command.SUBMIT_JOB_HIGH_BG),
        (Priority.NORMAL, True, Command.SUBMIT_JOB_BG),
        (Priority.LOW, True, Command.SUBMIT_JOB_LOW_BG),
        ("high", True, Command.SUBMIT_JOB_HIGH_BG),
        ("low", False, Command.SUBMIT_JOB_LOW),
    ],
)
def test_submit_command(priority, background, expected):
    assert submit_command(priority, background=background) is expected


def test_submit_command_defaults_to_normal_background():
    assert submit_command() is Command.SUBMIT_JOB_BG


def test_submit_command_refuses_an_unknown_priority():
    with pytest.raises(ValueError, match="urgent"):
        submit_command("urgent")


# -- admin text protocol ---------------------------------------------------------------


def test_parse_status():
    lines = ["tests.add\t3\t1\t2", "tests.record\t0\t0\t0"]
    assert parse_status(lines) == [
        FunctionStatus("tests.add", 3, 1, 2),
        FunctionStatus("tests.record", 0, 0, 0),
    ]
    assert parse_status([]) == []


@pytest.mark.parametrize("line", ["tests.add\t3\t1", "a\tb\tc\td", "tests.add 3 1 2", ""])
def test_parse_status_refuses_malformed_lines(line):
    with pytest.raises((ProtocolError, ValueError)):
        parse_status([line])


def test_text_reply_block_completes_on_the_dot_line():
    parser = TextReplyParser()
    assert parser.complete_block() is None
    parser.feed(b"tests.add\t1\t0\t1\n")
    assert parser.complete_block() is None
    parser.feed(b"tests.rec")
    assert parser.complete_block() is None
    parser.feed(b"ord\t0\t0\t1\n.")
    assert parser.complete_block() is None
    parser.feed(b"\n")
    assert parser.complete_block() == ["tests.add\t1\t0\t1", "tests.record\t0\t0\t1"]
    assert parser.lines() == ["tests.add\t1\t0\t1", "tests.record\t0\t0\t1", "."]


def test_text_reply_empty_block():
    parser = TextReplyParser()
    parser.feed(b".\n")
    assert parser.complete_block() == []


def test_text_reply_line_with_a_dot_inside_is_not_the_end():
    parser = TextReplyParser()
    parser.feed(b"host.example\n")
    assert parser.complete_block() is None


def test_text_reply_err_line_raises_once_complete():
    parser = TextReplyParser()
    parser.feed(b"ERR UNKNOWN_COMMAND Unknown+server")
    assert parser.complete_block() is None
    parser.feed(b"+command\n")
    with pytest.raises(ProtocolError, match="ERR UNKNOWN_COMMAND Unknown\\+server\\+command"):
        parser.complete_block()

    line_parser = TextReplyParser()
    line_parser.feed(b"ERR INVALID_ARGUMENTS An+invalid+argument+was+passed\n")
    with pytest.raises(ProtocolError, match="INVALID_ARGUMENTS"):
        line_parser.complete_line()


def test_text_reply_single_line():
    parser = TextReplyParser()
    parser.feed(b"OK 1.1.2")
    assert parser.complete_line() is None
    parser.feed(b"0\nextra")
    assert parser.complete_line() == "OK 1.1.20"
