"""The JSON messages a browser receives about a job (websocket, SSE and long-poll alike).

``{"type": "started"}`` (a worker has started the job; a newcomer to a running job
gets it first), ``{"type": "status", "numerator": n, "denominator": d}``,
``{"type": "data", "data": ...}``, ``{"type": "warning", "message": "..."}``, then
``{"type": "complete", "result": ..., "html": ...}`` or ``{"type": "failed",
"error": "..."}``.

For a job run by :func:`~django_gearattach.decorators.offload` the view's response is
split out of the result: ``html`` holds its HTML, ``redirect`` its Location, or
``download`` the name and size of a non-HTML body; ``result`` keeps its status code
and content type. For any other task ``html`` is null and ``result`` is its return
value.
"""

from __future__ import annotations

from typing import Any

from .attachment import JobEvent, outcome_of
from .models import Job, Status

OFFLOAD_FUNCTION = "gearattach.offload"
TERMINAL = frozenset({"complete", "failed"})


def message_for(event: JobEvent, function: str) -> dict[str, Any]:
    if event.event == "started":
        return {"type": "started"}
    if event.event == "status":
        return {"type": "status", "numerator": event.numerator, "denominator": event.denominator}
    if event.event == "data":
        return {"type": "data", "data": event.data}
    if event.event == "warning":
        return {"type": "warning", "message": event.message}
    if event.event == "complete":
        return complete_message(event.result, function)
    return {"type": "failed", "error": event.error or "the job failed"}


def complete_message(result: Any, function: str) -> dict[str, Any]:
    message: dict[str, Any] = {"type": "complete", "result": result, "html": None}
    if function == OFFLOAD_FUNCTION and isinstance(result, dict):
        rest = dict(result)
        message["html"] = rest.pop("html", None)
        for name in ("redirect", "download"):
            if name in rest:
                message[name] = rest.pop(name)
        if isinstance(message.get("download"), dict):
            # Where the file lies in storage is the server's business only.
            message["download"] = {
                k: v for k, v in message["download"].items() if k in ("name", "size")
            }
        message["result"] = rest
    return message


def snapshot(record: Job) -> list[dict[str, Any]]:
    """What a newcomer needs to catch up: the stored progress and data, or the outcome."""
    if record.is_finished:
        return [message_for(outcome_of(record), record.function)]
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


def state(record: Job) -> dict[str, Any]:
    """The JSON status endpoint's answer: the record as a browser may see it."""
    outcome = message_for(outcome_of(record), record.function) if record.is_finished else None
    return {
        "status": record.status,
        "numerator": record.progress_numerator,
        "denominator": record.progress_denominator,
        "data": record.data,
        "outcome": outcome,
    }
