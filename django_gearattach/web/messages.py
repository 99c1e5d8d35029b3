"""The JSON messages a browser receives about a job (websocket, SSE and long-poll alike).

``{"type": "started"}`` (a worker has started the job; a newcomer to a running job
gets it first), ``{"type": "unserved", "function": "..."}`` (no worker is running for
the job's function, so it waits for one) and ``{"type": "served"}`` (one is, since),
``{"type": "status", "numerator": n, "denominator": d}``,
``{"type": "data", "data": ...}``, ``{"type": "warning", "message": "..."}``,
``{"type": "superseded"}`` (a newer submit replaced the run followed so far, latest
wins: what follows is the new run's, its progress starting over),
``{"type": "chunk", "run": R, "seq": N, "data": ...}`` (the job's stream, see
:mod:`~django_gearattach.web.replay`) and ``{"type": "restart", "run": R}`` (the stream
starts over with a new run: discard its chunks shown so far), then
``{"type": "complete", "result": ..., "html": ...}`` or ``{"type": "failed",
"error": "..."}`` (the job's own error, and its ``traceback``, only with ``DEBUG`` on:
see :func:`failed_message`).

For a job run by :func:`~django_gearattach.decorators.offload` the view's response is
split out of the result: ``html`` holds its HTML, ``body`` another text body,
``redirect`` its Location, or ``download`` the name and size of a file; ``result``
keeps its status code and content type. Its headers and cookies are in no message.
For any other task ``html`` is null and ``result`` is its return value.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.utils.translation import gettext_noop

from ..attachment import JobEvent
from ..models import Job, Status
from .responses import open_response

OFFLOAD_FUNCTION = "gearattach.offload"
TERMINAL = frozenset({"complete", "failed"})
GENERIC_ERROR = gettext_noop("the job failed")
#: Failure texts of this app's own that every browser may see. They travel in English;
#: the widget shows them in the page's language (templatetags.gearattach.widget_strings).
PUBLIC_ERRORS = frozenset(
    {
        gettext_noop("the job was cancelled"),
        gettext_noop("the job was lost"),
        gettext_noop("cancelled before it started"),
    }
)
#: The parts of a complete message that carry an offloaded view's page.
PAGE_PARTS = frozenset({"html", "body", "redirect", "download"})
#: Parts of a stored response that no message carries: the page that serves the
#: stored response sends them (a cookie set HttpOnly must never reach a script).
UNSENT_PARTS = ("headers", "cookies")
#: Sent before a stream ends at ``STREAM_MAX_AGE``: follow the job again, with the token.
RECONNECT = '{"type":"reconnect"}'
#: The answer to a websocket's ``{"type": "ping"}``.
PONG = '{"type":"pong"}'
#: What the hub tells its subscribers instead of a job message (never sent as it is):
#: the job has no record, or this process cannot follow it now.
MISSING = "missing"
BROKEN = "broken"
#: The error a browser gets for :data:`BROKEN`.
CANNOT_FOLLOW = gettext_noop("cannot follow the job right now; retry shortly")


def error_frame(error: str) -> str:
    """A websocket frame saying what was wrong with what the browser sent, or why the
    socket closes."""
    return json.dumps({"type": "error", "error": error})


def message_for(event: JobEvent, function: str) -> dict[str, Any]:
    if event.event == "started":
        return {"type": "started"}
    if event.event == "unserved":
        return {"type": "unserved", "function": function}
    if event.event == "served":
        return {"type": "served"}
    if event.event == "status":
        return {"type": "status", "numerator": event.numerator, "denominator": event.denominator}
    if event.event == "data":
        return {"type": "data", "data": event.data}
    if event.event == "warning":
        return {"type": "warning", "message": event.message}
    if event.event == "superseded":
        return {"type": "superseded"}
    if event.event == "chunk":
        return chunk_message(event.run, event.seq, event.data)
    if event.event == "restart":
        return restart_message(event.run)
    if event.event == "complete":
        return complete_message(event.result, function)
    return failed_message(event.error)


def chunk_message(run: int | None, seq: int | None, data: Any) -> dict[str, Any]:
    """A chunk of the job's stream: run ``run``'s ``seq``-th (see :mod:`~.web.replay`)."""
    return {"type": "chunk", "run": run, "seq": seq, "data": data}


def restart_message(run: int | None) -> dict[str, Any]:
    """The stream starts over with run ``run``: what was shown of it must go."""
    return {"type": "restart", "run": run}


def failed_message(error: str | None, traceback: str = "") -> dict[str, Any]:
    """A failure as browsers see it: the record's error only with ``DEBUG`` on.

    An exception's text may hold anything (a password, a host and port, a query); it
    stays in the record and the admin. Browsers get a generic message, unless it is
    one of this app's own, which say nothing private. With ``DEBUG`` on, as on
    Django's own error pages, the error and the task's ``traceback`` are shown to
    whoever follows the job (its owner: tokens are bound to them).
    """
    if error and (settings.DEBUG or error in PUBLIC_ERRORS):
        message: dict[str, Any] = {"type": "failed", "error": error}
        if settings.DEBUG and traceback:
            message["traceback"] = traceback
        return message
    return {"type": "failed", "error": GENERIC_ERROR}


def outcome_message(record: Job) -> dict[str, Any]:
    """A finished record's ``complete`` or ``failed`` message (the traceback too, under
    ``DEBUG``, when the record's traceback column was loaded: this never queries)."""
    if record.status == Status.COMPLETE:
        return complete_message(record.result, record.function)
    loaded = "traceback" not in record.get_deferred_fields()
    return failed_message(record.failure_text, record.traceback if loaded else "")


def complete_message(result: Any, function: str) -> dict[str, Any]:
    message: dict[str, Any] = {"type": "complete", "result": result, "html": None}
    response = open_response(result) if function == OFFLOAD_FUNCTION else None
    if response is not None:
        rest = dict(response)
        message["html"] = rest.pop("html", None)
        for name in UNSENT_PARTS:
            rest.pop(name, None)
        for name in ("body", "redirect", "download"):
            if name in rest:
                message[name] = rest.pop(name)
        if isinstance(message.get("download"), dict):
            # Where the file lies in storage is the server's business only.
            message["download"] = {
                k: v for k, v in message["download"].items() if k in ("name", "size", "inline")
            }
        message["result"] = rest
    return message


def summary(payload: dict[str, Any]) -> dict[str, Any]:
    """``payload`` for a summary token: a ``complete`` message loses the offloaded page."""
    if payload.get("type") != "complete" or not PAGE_PARTS & payload.keys():
        return payload
    out = {k: v for k, v in payload.items() if k not in PAGE_PARTS}
    out["html"] = None
    return out


def snapshot(record: Job) -> list[dict[str, Any]]:
    """What a newcomer needs to catch up: the stored progress and data, or the outcome."""
    if record.is_finished:
        return [outcome_message(record)]
    out: list[dict[str, Any]] = []
    if record.status == Status.RUNNING:
        out.append({"type": "started"})
    if record.progress_denominator > 0:
        out.append(
            {
                "type": "status",
                "numerator": record.progress_numerator,
                "denominator": record.progress_denominator,
            }
        )
    if record.data is not None:
        out.append({"type": "data", "data": record.data})
    return out


def state(record: Job, *, summarised: bool = False) -> dict[str, Any]:
    """The JSON status endpoint's answer: the record as a browser may see it."""
    outcome = outcome_message(record) if record.is_finished else None
    if outcome is not None and summarised:
        outcome = summary(outcome)
    return {
        "status": record.status,
        "numerator": record.progress_numerator,
        "denominator": record.progress_denominator,
        "data": record.data,
        "outcome": outcome,
    }


@dataclass(frozen=True, slots=True)
class Message:
    """One message for browsers, encoded once. ``seq`` orders a feed's messages.

    ``type`` and ``final`` are worked out once too: a stream's chunk is looked at by
    every subscriber's resumer and socket.
    """

    payload: dict[str, Any]
    text: str
    seq: int
    type: str = field(init=False)
    final: bool = field(init=False)

    @classmethod
    def encoded(cls, payload: dict[str, Any], seq: int) -> Message:
        """``payload`` with its JSON text."""
        if payload["type"] == "chunk":
            # A chunk's data is JSON already (the worker sent it so): the plain encoder.
            data = json.dumps(payload["data"], separators=(",", ":"))
            run, number = int(payload["run"]), int(payload["seq"])
            text = f'{{"type":"chunk","run":{run},"seq":{number},"data":{data}}}'
        else:
            text = json.dumps(payload, cls=DjangoJSONEncoder, separators=(",", ":"))
        return cls(payload, text, seq)

    def __post_init__(self) -> None:
        kind = str(self.payload["type"])
        object.__setattr__(self, "type", kind)
        object.__setattr__(self, "final", kind in TERMINAL or kind in (MISSING, BROKEN))

    def for_reader(self, summarised: bool) -> tuple[dict[str, Any], str]:
        """The payload and its JSON for a token that is (or is not) a summary token."""
        if not summarised or summary(self.payload) is self.payload:
            return self.payload, self.text
        payload = summary(self.payload)
        return payload, json.dumps(payload, cls=DjangoJSONEncoder, separators=(",", ":"))
