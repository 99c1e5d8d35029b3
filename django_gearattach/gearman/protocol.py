"""Sans-IO codec for the Gearman binary protocol and its admin text protocol.

Nothing here touches a socket: :func:`encode` turns a command into bytes and
:class:`PacketParser` turns received bytes into :class:`Packet` objects. The
blocking and asyncio connections are thin layers over this module.
"""

from __future__ import annotations

import enum
import re
import struct
import unicodedata
from dataclasses import dataclass

from .errors import ProtocolError

REQ = b"\0REQ"
RES = b"\0RES"
HEADER = struct.Struct(">4sII")
#: Longest unique key gearmand 1.1.20 keeps intact (64 bytes are silently truncated).
MAX_UNIQUE_BYTES = 63
#: Refuse absurd packets instead of buffering them forever.
MAX_PACKET_BYTES = 64 * 1024 * 1024


class Command(enum.IntEnum):
    CAN_DO = 1
    CANT_DO = 2
    RESET_ABILITIES = 3
    PRE_SLEEP = 4
    NOOP = 6
    SUBMIT_JOB = 7
    JOB_CREATED = 8
    GRAB_JOB = 9
    NO_JOB = 10
    JOB_ASSIGN = 11
    WORK_STATUS = 12
    WORK_COMPLETE = 13
    WORK_FAIL = 14
    GET_STATUS = 15
    ECHO_REQ = 16
    ECHO_RES = 17
    SUBMIT_JOB_BG = 18
    ERROR = 19
    STATUS_RES = 20
    SUBMIT_JOB_HIGH = 21
    SET_CLIENT_ID = 22
    WORK_EXCEPTION = 25
    OPTION_REQ = 26
    OPTION_RES = 27
    WORK_DATA = 28
    WORK_WARNING = 29
    GRAB_JOB_UNIQ = 30
    JOB_ASSIGN_UNIQ = 31
    SUBMIT_JOB_HIGH_BG = 32
    SUBMIT_JOB_LOW = 33
    SUBMIT_JOB_LOW_BG = 34
    SUBMIT_JOB_EPOCH = 36
    GET_STATUS_UNIQUE = 41
    STATUS_RES_UNIQUE = 42


#: Number of NUL-separated arguments each command carries (the last may hold NULs).
ARITY: dict[Command, int] = {
    Command.CAN_DO: 1,
    Command.CANT_DO: 1,
    Command.RESET_ABILITIES: 0,
    Command.PRE_SLEEP: 0,
    Command.NOOP: 0,
    Command.SUBMIT_JOB: 3,
    Command.SUBMIT_JOB_BG: 3,
    Command.SUBMIT_JOB_HIGH: 3,
    Command.SUBMIT_JOB_HIGH_BG: 3,
    Command.SUBMIT_JOB_LOW: 3,
    Command.SUBMIT_JOB_LOW_BG: 3,
    Command.SUBMIT_JOB_EPOCH: 4,
    Command.JOB_CREATED: 1,
    Command.GRAB_JOB: 0,
    Command.GRAB_JOB_UNIQ: 0,
    Command.NO_JOB: 0,
    Command.JOB_ASSIGN: 3,
    Command.JOB_ASSIGN_UNIQ: 4,
    Command.WORK_STATUS: 3,
    Command.WORK_COMPLETE: 2,
    Command.WORK_FAIL: 1,
    Command.WORK_EXCEPTION: 2,
    Command.WORK_DATA: 2,
    Command.WORK_WARNING: 2,
    Command.GET_STATUS: 1,
    Command.STATUS_RES: 5,
    Command.GET_STATUS_UNIQUE: 1,
    Command.STATUS_RES_UNIQUE: 6,
    Command.ECHO_REQ: 1,
    Command.ECHO_RES: 1,
    Command.ERROR: 2,
    Command.SET_CLIENT_ID: 1,
    Command.OPTION_REQ: 1,
    Command.OPTION_RES: 1,
}


class Priority(enum.StrEnum):
    HIGH = "high"
    NORMAL = "normal"
    LOW = "low"


_SUBMIT: dict[tuple[Priority, bool], Command] = {
    (Priority.HIGH, False): Command.SUBMIT_JOB_HIGH,
    (Priority.NORMAL, False): Command.SUBMIT_JOB,
    (Priority.LOW, False): Command.SUBMIT_JOB_LOW,
    (Priority.HIGH, True): Command.SUBMIT_JOB_HIGH_BG,
    (Priority.NORMAL, True): Command.SUBMIT_JOB_BG,
    (Priority.LOW, True): Command.SUBMIT_JOB_LOW_BG,
}


def submit_command(priority: Priority | str = Priority.NORMAL, background: bool = True) -> Command:
    """The SUBMIT_JOB* command for a priority and mode."""
    return _SUBMIT[(Priority(priority), background)]


@dataclass(frozen=True, slots=True)
class Packet:
    command: Command
    args: tuple[bytes, ...]

    def arg(self, index: int) -> bytes:
        return self.args[index]


def _as_bytes(value: bytes | str | int) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, int):
        return str(value).encode()
    return value.encode()


def encode(command: Command, *args: bytes | str | int, magic: bytes = REQ) -> bytes:
    """Encode one packet; ``magic`` is ``REQ`` for requests (the default) or ``RES``."""
    expected = ARITY[command]
    if len(args) != expected:
        raise ProtocolError(f"{command.name} takes {expected} arguments, got {len(args)}")
    parts = [_as_bytes(a) for a in args]
    for part in parts[:-1]:
        if b"\0" in part:
            raise ProtocolError(f"{command.name}: only the last argument may contain NUL bytes")
    body = b"\0".join(parts)
    return HEADER.pack(magic, int(command), len(body)) + body


_CONTROL_BYTES = re.compile(rb"[\x00-\x1f\x7f]")
#: Control, format (bidirectional overrides, zero-width characters), line and paragraph
#: separators: what turns one log line into two, or makes a terminal show another text.
_CONTROL_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp"})


def has_control_characters(unique: bytes) -> bool:
    """Whether a unique key holds control characters (a newline, an escape, a
    right-to-left override...): keys are logged, shown and typed, so none may."""
    if _CONTROL_BYTES.search(unique):
        return True
    if unique.isascii():
        return False
    try:
        text = unique.decode()
    except UnicodeDecodeError:
        return False  # read as text with replacement characters, which are harmless
    return any(unicodedata.category(char) in _CONTROL_CATEGORIES for char in text)


def check_unique(unique: bytes) -> bytes:
    """Reject unique keys that gearmand would refuse, truncate or misread, and keys with
    control characters."""
    if not unique:
        raise ValueError("a unique key must not be empty (gearmand never coalesces it)")
    if b"\0" in unique:
        raise ValueError("a unique key must not contain NUL bytes")
    if has_control_characters(unique):
        raise ValueError(
            "a unique key must not contain control characters (newlines, tabs, escapes, "
            "bidirectional overrides): a key is logged and shown, and they would forge lines"
        )
    if unique == b"-":
        raise ValueError('the unique "-" makes gearmand hash the payload; send a real key')
    if len(unique) > MAX_UNIQUE_BYTES:
        raise ValueError(
            f"a unique key is at most {MAX_UNIQUE_BYTES} bytes, got {len(unique)} "
            "(gearmand truncates or refuses longer keys)"
        )
    return unique


class PacketParser:
    """Incremental parser: ``feed()`` bytes, iterate ``packets()`` that are complete.

    ``magic`` is the magic this side expects to receive (``RES`` for clients and
    workers, ``REQ`` for a server written in tests).
    """

    def __init__(self, magic: bytes = RES) -> None:
        self._magic = magic
        self._buffer = bytearray()

    def feed(self, data: bytes) -> None:
        self._buffer += data

    def next_packet(self) -> Packet | None:
        buf = self._buffer
        if len(buf) < HEADER.size:
            return None
        magic, ctype, size = HEADER.unpack_from(buf)
        if magic != self._magic:
            if bytes(buf[:1]) != b"\0":
                raise ProtocolError("text reply received where a binary packet was expected")
            raise ProtocolError(f"bad packet magic {magic!r}")
        if size > MAX_PACKET_BYTES:
            raise ProtocolError(f"packet of {size} bytes exceeds the limit")
        end = HEADER.size + size
        if len(buf) < end:
            return None
        try:
            command = Command(ctype)
        except ValueError:
            raise ProtocolError(f"unknown packet type {ctype}") from None
        body = bytes(buf[HEADER.size : end])
        del buf[:end]
        arity = ARITY[command]
        if arity == 0:
            args: tuple[bytes, ...] = ()
        else:
            args = tuple(body.split(b"\0", arity - 1))
            if len(args) != arity:
                raise ProtocolError(f"{command.name} carries {len(args)} arguments, not {arity}")
        return Packet(command, args)

    def packets(self) -> list[Packet]:
        out: list[Packet] = []
        while (packet := self.next_packet()) is not None:
            out.append(packet)
        return out


# -- admin text protocol -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FunctionStatus:
    function: str
    queued: int
    running: int
    workers: int


def parse_status(lines: list[str]) -> list[FunctionStatus]:
    """Parse the admin ``status`` reply: ``function\\ttotal\\trunning\\tworkers``."""
    out = []
    for line in lines:
        parts = line.split("\t")
        if len(parts) != 4:
            raise ProtocolError(f"malformed status line {line!r}")
        name, total, running, workers = parts
        try:
            out.append(FunctionStatus(name, int(total), int(running), int(workers)))
        except ValueError:
            raise ProtocolError(f"malformed status line {line!r}") from None
    return out


class TextReplyParser:
    """Collects an admin reply: lines up to a lone ``.`` (or a single line for one-liners)."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> None:
        self._buffer += data

    def lines(self) -> list[str]:
        return self._buffer.decode("utf-8", "replace").splitlines()

    def complete_block(self) -> list[str] | None:
        """Lines before the terminating ``.`` once it has arrived."""
        text = self._buffer.decode("utf-8", "replace")
        if text.startswith("ERR "):
            if text.endswith("\n"):
                raise ProtocolError(text.strip())
            return None
        if text == ".\n" or text.endswith("\n.\n"):
            return [line.rstrip("\r") for line in text[:-2].splitlines()]
        return None

    def complete_line(self) -> str | None:
        text = self._buffer.decode("utf-8", "replace")
        if "\n" not in text:
            return None
        line = text.split("\n", 1)[0].rstrip("\r")  # some replies end with CRLF
        if line.startswith("ERR "):
            raise ProtocolError(line)
        return line
