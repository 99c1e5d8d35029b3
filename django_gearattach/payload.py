"""What travels in Gearman packets: JSON arguments, JSON results, the attach marker.

Arguments are ``{"args": [...], "kwargs": {...}}`` or empty for none, so the stock
``gearman`` CLI can submit jobs. With ``GEARATTACH["TRACING"]`` on, a submitter in a
traced request or task adds the caller's W3C trace context under ``"trace"``
(:mod:`django_gearattach.tracing`); every worker accepts that key, traced or not. Never
pickle: a worker must not execute what a client sends.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Mapping, Sequence
from typing import Any

from django.core.serializers.json import DjangoJSONEncoder

from .exceptions import BadPayload, InvalidKey
from .gearman.protocol import MAX_UNIQUE_BYTES, check_unique

#: The payload's (and the record's ``arguments``') key for the submitter's trace context.
TRACE = "trace"
_KEYS = frozenset({"args", "kwargs", TRACE})

#: Sent as the data of an attach request. A worker that receives it answers from the
#: job record instead of running anything the payload says.
ATTACH_MARKER = b'{"gearattach": "attach"}'


def dumps(value: Any) -> bytes:
    try:
        # allow_nan=False: NaN and Infinity are not JSON; other clients would refuse them.
        return json.dumps(
            value, cls=DjangoJSONEncoder, separators=(",", ":"), allow_nan=False
        ).encode()
    except (TypeError, ValueError) as exc:
        raise BadPayload(f"value is not JSON serialisable: {exc}") from exc


def to_json_value(value: Any) -> Any:
    """``value`` as plain JSON types (what the database and the wire will hold)."""
    return json.loads(dumps(value))


def encode_arguments(args: Sequence[Any] = (), kwargs: Mapping[str, Any] | None = None) -> bytes:
    """JSON job data; ``{}`` for no arguments.

    Workers accept empty data too (the ``gearman`` CLI sends none), but we never send
    it: gearmand 1.1.20's SQLite queue stores empty data as NULL and then refuses to
    start ("failed to reload queue").
    """
    if not args and not kwargs:
        return b"{}"
    return dumps({"args": list(args), "kwargs": dict(kwargs or {})})


def decode_arguments(data: bytes) -> tuple[list[Any], dict[str, Any]]:
    """Parse job data; raise :class:`BadPayload` with a message saying what was wrong.

    A ``"trace"`` key (the submitter's trace context) is accepted and left out: see
    :func:`trace_of`.
    """
    document = decode_document(data)
    return document.get("args", []), document.get("kwargs", {})


def decode_document(data: bytes) -> dict[str, Any]:
    """Job data parsed and checked as :func:`decode_arguments` does, as the whole JSON
    object (with its ``"trace"``, for a traced worker's span: decoded once)."""
    if not data.strip():
        return {}
    try:
        value = json.loads(data)
    except (UnicodeDecodeError, ValueError) as exc:
        raise BadPayload(
            'job data is not JSON; send {"args": [...], "kwargs": {...}} or nothing'
        ) from exc
    if not isinstance(value, dict) or not value.keys() <= _KEYS:
        raise BadPayload(
            'job data must be a JSON object with only "args" and "kwargs" (and "trace")'
        )
    args, kwargs = value.get("args", []), value.get("kwargs", {})
    if not isinstance(args, list) or not isinstance(kwargs, dict):
        raise BadPayload('"args" must be a JSON array and "kwargs" a JSON object')
    return value


#: A W3C ``traceparent``: version 00, a trace id and a span id that are not all zeros.
TRACEPARENT = re.compile(r"00-(?!0{32})[0-9a-f]{32}-(?!0{16})[0-9a-f]{16}-[0-9a-f]{2}")


def trace_of(arguments: Any, offloaded: bool = False) -> dict[str, Any] | None:
    """The trace context stored with a job (in its record's ``arguments``, or its decoded
    payload), or None. An offloaded request (``offloaded``) keeps it in its signed request.

    It came through gearmand: the caller checks what it uses of it.
    """
    if not isinstance(arguments, dict):
        return None
    holder: Any = arguments
    if offloaded:
        kwargs = arguments.get("kwargs")
        holder = kwargs.get("request") if isinstance(kwargs, dict) else None
        if not isinstance(holder, dict):
            return None
    carrier = holder.get(TRACE)
    return carrier if isinstance(carrier, dict) else None


def traceparent_of(arguments: Any, offloaded: bool = False) -> str | None:
    """The stored job's ``traceparent``, if it is well formed; else None."""
    carrier = trace_of(arguments, offloaded)
    value = None if carrier is None else carrier.get("traceparent")
    return value if isinstance(value, str) and TRACEPARENT.fullmatch(value) else None


def is_attach_marker(data: bytes) -> bool:
    return data == ATTACH_MARKER


def decode_result(data: bytes) -> Any:
    """A WORK_COMPLETE payload; data that is not JSON (a foreign worker's) stays text."""
    if not data:
        return None
    try:
        return json.loads(data)
    except (UnicodeDecodeError, ValueError):
        return data.decode("utf-8", "replace")


def new_key() -> str:
    """A random key of 128 bits (32 hex characters)."""
    return secrets.token_hex(16)


def shown(key: str) -> str:
    """``key`` for a log line: as it is when every character is printable, else quoted
    as ``%r`` quotes it. (Keys are checked for control characters where they enter, so
    only a record written before that check, or a bug, can hold one.)"""
    return key if key.isprintable() else repr(key)


def check_key(key: str) -> bytes:
    """Validate a caller's key and return its bytes (see :func:`check_unique`)."""
    if not isinstance(key, str):
        raise InvalidKey(f"a job key must be a string, got {type(key).__name__}")
    raw = key.encode()
    try:
        return check_unique(raw)
    except ValueError as exc:
        hint = " Hash long keys, e.g. sha256 hex[:40]." if len(raw) > MAX_UNIQUE_BYTES else ""
        raise InvalidKey(f"{exc}.{hint}") from None
