"""A job's stream: chunks a task appends (``job.stream(chunk)``), live and durable.

A chunk is ``(run, seq, data)``. ``run`` is the record's ``stream_run``: every run a
worker starts (the first, a rerun after a killed worker, a retry, a follow-up or a
replacement) counts one more in its running mark, so it never repeats within a record.
``seq`` counts the run's chunks from 1. ``data`` is a str or any JSON value.

* Live: each chunk goes to gearmand at once in a ``WORK_DATA`` packet signed with a key
  derived from ``SECRET_KEY`` (:func:`encode_packet`), bound to the job's function and
  key, the run and the seq. Gearman has no authentication, so attachers check it
  (:func:`decode_packet`) and drop, with a log line, a packet that does not verify.
* Durable: the worker writes chunks in batches (:mod:`~.worker.streaming`), each batch
  in one transaction with the record's ``stream_seq`` (the last chunk kept), conditioned
  on the run's claim. Only the chunks of the record's current run are read
  (:func:`read`); a new run deletes the older ones with its first batch. Chunks are
  deleted with their record (pruning cascades).
* A position ``"R:N"`` names the last chunk a client holds; ``"0:0"`` is the start.
  A client that holds chunks of an older run than the current one must discard them
  (:attr:`Replay.restart`): runs are never spliced.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from asgiref.sync import sync_to_async
from django.conf import settings

from .models import Job, JobChunk
from .payload import dumps
from .sealing import secret_keys

logger = logging.getLogger("django_gearattach.streams")

#: What starts a stream packet's payload; no JSON text (a ``data`` report) starts so.
PREFIX = b"\x1egs1 "
SALT = "django_gearattach.streams"
#: The largest run or seq (the columns' range).
MAXIMUM = 2**31 - 1
#: Seconds a chunk may wait in a worker's buffer before its batch is written.
FLUSH_INTERVAL = 0.1
_MAC_LENGTH = 32  # hex digits: 128 bits
_POSITION = re.compile(r"\A([0-9]{1,10}):([0-9]{1,10})\Z")

Position = tuple[int, int]


@dataclass(frozen=True, slots=True)
class Chunk:
    run: int
    seq: int
    data: Any

    @property
    def position(self) -> str:
        return format_position(self.run, self.seq)


@dataclass(frozen=True, slots=True)
class Replay:
    """What :func:`read` found after a position.

    ``run``: the record's current run (None before any run started); ``restart``: the
    position names another run than the current one, so what its holder shows must be
    discarded (``chunks`` are then the current run's from its start); ``chunks``: the
    durable chunks after the position, in order.
    """

    run: int | None
    restart: bool
    chunks: list[Chunk] = field(default_factory=list)

    @property
    def last(self) -> Position | None:
        """The position of the last chunk replayed (None when there is none)."""
        return (self.chunks[-1].run, self.chunks[-1].seq) if self.chunks else None


# -- positions --------------------------------------------------------------------------


def _bounded(value: int, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"a stream {what} must be an integer, not {value!r}")
    if not 0 <= value <= MAXIMUM:
        raise ValueError(f"a stream {what} must be between 0 and {MAXIMUM}, not {value}")
    return value


def parse_position(text: str) -> Position:
    """``"R:N"`` (run R, last seq N held) as ``(R, N)``; ValueError when malformed.

    ``"0:0"`` is the start of the stream.
    """
    if not isinstance(text, str):
        raise ValueError(f"a stream position is a string 'run:seq', not {text!r}")
    match = _POSITION.match(text.strip())
    if match is None:
        raise ValueError(
            f"{text[:40]!r} is not a stream position: write 'run:seq' with two whole "
            "numbers, e.g. '2:17' ('0:0' for the start)"
        )
    return _bounded(int(match[1]), "run"), _bounded(int(match[2]), "seq")


def format_position(run: int, seq: int) -> str:
    return f"{run}:{seq}"


def position(value: int | str | tuple[int, int] | None) -> tuple[int | None, int] | None:
    """An ``after=`` argument: None (the start), an int N (seq N of the current run, as
    ``(None, N)``), ``"R:N"`` or ``(R, N)``. ValueError when malformed."""
    if value is None:
        return None
    if isinstance(value, str):
        return parse_position(value)
    if isinstance(value, tuple):
        if len(value) != 2:
            raise ValueError(f"a stream position is (run, seq), not {value!r}")
        return _bounded(value[0], "run"), _bounded(value[1], "seq")
    return None, _bounded(value, "seq")


# -- packets ----------------------------------------------------------------------------


def encode_data(value: Any) -> bytes:
    """A chunk as the JSON text that travels and is kept."""
    return dumps(value)


_keys: dict[str | bytes, bytes] = {}


def _key(secret: str | bytes) -> bytes:
    """The HMAC key that :func:`~django.utils.crypto.salted_hmac` derives from
    ``secret``, derived once (it cost more than the HMAC of a chunk)."""
    derived = _keys.get(secret)
    if derived is None:
        derived = _keys[secret] = hashlib.sha256(
            SALT.encode() + (secret.encode() if isinstance(secret, str) else secret)
        ).digest()
    return derived


def _mac(secret: str | bytes, function: str, key: str, run: int, seq: int, data: bytes) -> str:
    """salted_hmac(SALT, message, secret, "sha256"), with its key derived once."""
    message = b"%s\0%s\0%d\0%d\0%s" % (function.encode(), key.encode(), run, seq, data)
    return hmac.digest(_key(secret), message, "sha256").hex()[:_MAC_LENGTH]


def encode_packet(function: str, key: str, run: int, seq: int, data: bytes) -> bytes:
    """The ``WORK_DATA`` payload of chunk ``(run, seq)``, ``data`` its JSON text."""
    mac = _mac(secret_keys()[0], function, key, run, seq, data)
    return b"%s%d %d %s %s" % (PREFIX, run, seq, mac.encode(), data)


def is_stream_packet(raw: bytes) -> bool:
    """Whether a ``WORK_DATA`` payload claims to be a chunk (verified or not)."""
    return raw.startswith(PREFIX)


def decode_packet(function: str, key: str, raw: bytes) -> Chunk | None:
    """The chunk a ``WORK_DATA`` payload carries, or None: not a chunk, malformed, or
    a signature that does not verify with ``SECRET_KEY`` or a fallback (logged)."""
    if not raw.startswith(PREFIX):
        return None
    try:
        run_text, seq_text, mac, data = raw[len(PREFIX) :].split(b" ", 3)
        run, seq = int(run_text), int(seq_text)
        if not (0 < run <= MAXIMUM and 0 < seq <= MAXIMUM):
            raise ValueError("run or seq out of range")
        text = mac.decode("ascii")
    except (ValueError, UnicodeDecodeError):
        logger.warning("job %s[%s]: a malformed stream packet was dropped", function, key)
        return None
    signed = _mac(settings.SECRET_KEY, function, key, run, seq, data)
    if hmac.compare_digest(text, signed) or any(
        hmac.compare_digest(text, _mac(secret, function, key, run, seq, data))
        for secret in secret_keys()[1:]
    ):
        try:
            return Chunk(run, seq, json.loads(data.decode()))
        except ValueError:  # UnicodeDecodeError too
            pass
    logger.warning(
        "job %s[%s]: a stream packet (%d:%d) whose signature does not verify was dropped: "
        "not from a worker of this site (or SECRET_KEY differs between the workers and here)",
        function,
        key,
        run,
        seq,
    )
    return None


# -- durable chunks ---------------------------------------------------------------------


def _record(job: Job | UUID | str) -> tuple[Any, int, int] | None:
    pk = job.pk if isinstance(job, Job) else job
    row = Job.objects.filter(pk=pk).values_list("pk", "stream_run", "stream_seq").first()
    return row


def read(job: Job | UUID | str, after: int | str | tuple[int, int] | None = None) -> Replay:
    """The durable chunks of ``job`` (a record or its pk) after the position ``after``
    (see :func:`position`). Reads the record's stream run and, when there may be chunks
    to return, its chunks: at most two queries. A missing record reads as empty."""
    wanted = position(after)
    row = _record(job)
    if row is None:
        return Replay(None, False)
    return replay(row[0], row[1], row[2], wanted)


def plan(run: int, last: int, held: tuple[int | None, int] | None) -> tuple[int | None, bool, int]:
    """What a holder of ``held`` needs of a stream whose current run is ``run`` with
    ``last`` chunks kept: (the run, whether it restarts, the seq to read after). No
    query: a caller reads chunks only when the seq to read after is below ``last``."""
    if run == 0:
        return None, False, last
    held_run, held_seq = held if held is not None else (0, 0)
    if held_run is None:
        held_run = run
    restart = held_run not in (0, run)
    return run, restart, 0 if restart or held_run == 0 else held_seq


def replay(pk: Any, run: int, last: int, held: tuple[int | None, int] | None) -> Replay:
    """The :class:`Replay` of record ``pk`` (its ``stream_run`` and ``stream_seq``) for
    a holder of ``held``: one query, or none when there is nothing to read."""
    current, restart, start = plan(run, last, held)
    if current is None:
        return Replay(None, False)
    return Replay(current, restart, chunks_between(pk, current, start, last))


def chunks_between(pk: Any, run: int, after: int, upto: int | None = None) -> list[Chunk]:
    """The durable chunks of run ``run`` of record ``pk`` with ``after < seq <= upto``."""
    if upto is not None and upto <= after:
        return []
    rows = JobChunk.objects.filter(job_id=pk, run=run, seq__gt=after)
    if upto is not None:
        rows = rows.filter(seq__lte=upto)
    found = list(rows.order_by("seq").values_list("seq", "data"))
    try:  # one parse for the lot: 10,000 separate ones cost several times more
        values = json.loads("[" + ",".join(text for _, text in found) + "]")
    except ValueError:
        values = None
    if values is None or len(values) != len(found):  # a row that is not one JSON value
        values = [json.loads(text) for _, text in found]
    return [Chunk(run, seq, value) for (seq, _), value in zip(found, values, strict=True)]


async def aread(job: Job | UUID | str, after: int | str | tuple[int, int] | None = None) -> Replay:
    """:func:`read` from async code."""
    return await sync_to_async(read)(job, after)
