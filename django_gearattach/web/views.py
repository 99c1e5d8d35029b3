"""HTTP endpoints for clients without websockets (``include("django_gearattach.urls")``).

* ``jobs/<token>/``: the job's state as JSON, from its record.
* ``jobs/<token>/poll/?timeout=S&cursor=C``: long-poll. Answers at once with what
  happened since ``cursor`` (the previous answer's), else waits up to ``timeout``
  seconds (default 25, at most ``GEARATTACH["LONGPOLL_MAX_TIMEOUT"]``) for the next
  message. ``{"messages": [...], "cursor": "...", "done": bool}``.
* ``jobs/<token>/events/``: a Server-Sent Events stream of the same messages as the
  websocket; it ends after the outcome (then an ``end`` event), or after
  ``GEARATTACH["STREAM_MAX_AGE"]`` seconds with ``{"type": "reconnect"}``. A job's
  stream comes as ``chunk`` events (``id: R:N``) and ``restart`` events (``id: R:0``):
  a reconnecting ``EventSource`` resumes after its ``Last-Event-ID``, and
  ``?after=R:N`` resumes after a position the page holds. ``?format=html`` sends each
  chunk's text escaped as HTML, for htmx's SSE extension (see docs/streaming.rst).

The long-poll and SSE endpoints answer 400 for a malformed stream position.
* ``jobs/<token>/download/``: the file a finished offloaded view returned.

Every endpoint answers 403 for a token that is invalid, expired or someone else's,
and 404 when the job's record is gone, or holds a later run than the token's. The
long-poll and SSE endpoints are async: run them under ASGI, where the process's hub
shares one gearmand attachment per job. While they wait they hold no thread and no
database connection, and they count against the stream limits of
:mod:`~django_gearattach.web.streams` (HTTP 429 beyond them).
"""

from __future__ import annotations

import json
import math
import time
import weakref
from collections.abc import AsyncIterator

from django.conf import settings
from django.core.files.storage import default_storage
from django.http import HttpRequest, HttpResponseBase, JsonResponse
from django.http.response import StreamingHttpResponse
from django.utils.cache import add_never_cache_headers
from django.utils.html import escape
from django.utils.translation import gettext
from django.views.decorators.http import require_GET

from ..conf import conf
from ..models import Job, Status
from . import streams
from .files import FileResponse
from .hub import Subscription, get_hub
from .messages import (
    BROKEN,
    CANNOT_FOLLOW,
    MISSING,
    OFFLOAD_FUNCTION,
    RECONNECT,
    Message,
    outcome_message,
    state,
    summary,
)
from .positions import BAD_POSITION, Position, parse_position
from .replay import STREAM_TYPES, stored
from .responses import open_response
from .streams import Slot, StreamLimitReached, client_of, release_request_resources
from .tokens import Identity, JobRef, TokenRefused, check_token

DEFAULT_POLL_TIMEOUT = 25.0
#: Seconds between SSE comments that keep proxies from closing an idle stream.
SSE_HEARTBEAT = 15.0


def _json(data: dict[str, object], status: int = 200) -> JsonResponse:
    response = JsonResponse(data, status=status)
    add_never_cache_headers(response)
    return response


def _refused(refusal: TokenRefused) -> JsonResponse:
    body: dict[str, object] = {"error": str(refusal)}
    if settings.DEBUG and refusal.reason:
        body["reason"] = refusal.reason  # which check refused it: the developer's eyes only
    return _json(body, 403)


def _missing() -> JsonResponse:
    return _json({"error": gettext("no such job: its record no longer exists")}, 404)


def _check(token: str, identity: Identity) -> JobRef | TokenRefused:
    try:
        return check_token(token, identity)
    except TokenRefused as refusal:
        return refusal


def _job(request: HttpRequest, token: str) -> tuple[JobRef, Job] | JsonResponse:
    """The token's job and its record, or the refusal (403) or absence (404) to answer."""
    ref = _check(token, Identity.of_request(request))
    if isinstance(ref, TokenRefused):
        return _refused(ref)
    record = Job.objects.for_key(ref.function, ref.key).first()
    if record is None or not ref.names(record):  # gone, or run again since
        return _missing()
    return ref, record


async def _afollow(request: HttpRequest, token: str) -> tuple[JobRef, Job, Slot] | JsonResponse:
    """For the long-lived endpoints: the token's job, its record and a counted stream slot.

    Everything that needs the database happens here; then the request's connection
    is closed and its thread retired (:func:`~django_gearattach.web.streams.
    release_request_resources`), since the wait that follows needs neither.
    """
    identity = await Identity.aof_request(request)
    ref = _check(token, identity)
    record = (
        None
        if isinstance(ref, TokenRefused)
        else await Job.objects.for_key(ref.function, ref.key).afirst()
    )
    await release_request_resources()
    if isinstance(ref, TokenRefused):
        return _refused(ref)
    if record is None or not ref.names(record):
        return _missing()
    try:
        slot = streams.registry.open(client_of(identity, request.META.get("REMOTE_ADDR")))
    except StreamLimitReached as exc:
        response = _json({"error": str(exc)}, 429)
        response["Retry-After"] = str(streams.RETRY_AFTER)
        return response
    return ref, record, slot


@require_GET
def status(request: HttpRequest, token: str) -> HttpResponseBase:
    """The job's state: status, progress, data and (once finished) its outcome."""
    found = _job(request, token)
    if isinstance(found, JsonResponse):
        return found
    ref, record = found
    return _json(state(record, summarised=ref.summary))


def _timeout(text: str | None) -> float | None:
    if text is None or text == "":
        return min(DEFAULT_POLL_TIMEOUT, conf.LONGPOLL_MAX_TIMEOUT)
    try:
        value = float(text)
    except ValueError:
        return None
    if not math.isfinite(value) or not 0 <= value <= conf.LONGPOLL_MAX_TIMEOUT:
        return None
    return value


def _position(request: HttpRequest) -> Position | None:
    """The stream position the client holds: ``Last-Event-ID`` (an ``EventSource``
    reconnecting, newer than the URL's), else ``?after=``; None when malformed."""
    header = request.headers.get("Last-Event-ID")
    return parse_position(header if header else request.GET.get("after"))


def _bad_position() -> JsonResponse:
    return _json({"error": gettext(BAD_POSITION)}, 400)


def _cursor(text: str | None) -> tuple[int, int] | None:
    if not text:
        return (0, 0)
    feed, _, seq = text.partition(".")
    if not (feed.isdigit() and seq.isdigit()) or len(text) > 40:
        return None
    return int(feed), int(seq)


@require_GET
async def poll(request: HttpRequest, token: str) -> HttpResponseBase:
    """Long-poll: the messages after ``cursor``, waiting up to ``timeout`` seconds."""
    timeout = _timeout(request.GET.get("timeout"))
    if timeout is None:
        limit = conf.LONGPOLL_MAX_TIMEOUT
        text = gettext("timeout must be a number of seconds from 0 to %(limit)s")
        return _json({"error": text % {"limit": f"{limit:g}"}}, 400)
    cursor = _cursor(request.GET.get("cursor"))
    if cursor is None:
        return _json({"error": gettext("cursor must be the cursor of a previous answer")}, 400)
    after = parse_position(request.GET.get("after"))
    if after is None:
        return _bad_position()
    found = await _afollow(request, token)
    if isinstance(found, JsonResponse):
        return found
    ref, record, slot = found
    with slot:
        if record.is_finished:
            outcome = outcome_message(record)
            outcome = summary(outcome) if ref.summary else outcome
            chunks = [] if ref.summary or not record.stream_seq else await stored(record.pk, after)
            return _json({"messages": [*chunks, outcome], "cursor": "0.0", "done": True})
        async with get_hub().subscribe(
            ref.function, ref.key, record=record, after=after, summarised=ref.summary
        ) as subscription:
            messages = await _collect(subscription, cursor, timeout)
            last = messages[-1].seq if messages else cursor[1]
            position = f"{subscription.feed_id}.{last}"
    if any(m.type == MISSING for m in messages):
        return _missing()
    if any(m.type == BROKEN for m in messages):
        return _json({"error": gettext(CANNOT_FOLLOW)}, 503)
    return _json(
        {
            "messages": [m.for_reader(ref.summary)[0] for m in messages],
            "cursor": position,
            "done": any(m.final for m in messages),
        }
    )


async def _collect(
    subscription: Subscription, cursor: tuple[int, int], timeout: float
) -> list[Message]:
    feed, seen = cursor

    def new(message: Message) -> bool:
        # The stream's messages are the subscriber's own (its position keeps their order).
        return message.type in STREAM_TYPES or subscription.feed_id != feed or message.seq > seen

    messages = [m for m in subscription.pending() if new(m)]
    if messages:
        return messages
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        message = await subscription.get(left)
        if message is None:
            break
        if new(message):
            return [message, *(m for m in subscription.pending() if new(m))]
    return []


@require_GET
async def events(request: HttpRequest, token: str) -> HttpResponseBase:
    """Server-Sent Events: each message as ``data: {json}``; the stream ends after the outcome
    (or after ``STREAM_MAX_AGE`` seconds, with a ``reconnect`` message)."""
    after = _position(request)
    if after is None:
        return _bad_position()
    html = request.GET.get("format", "json")
    if html not in ("json", "html"):
        return _json({"error": gettext('format must be "json" or "html"')}, 400)
    found = await _afollow(request, token)
    if isinstance(found, JsonResponse):
        return found
    ref, record, slot = found
    stream = _stream(ref, record, slot, after, html == "html")
    # A stream that is never iterated (the client left first) still gives its slot back.
    weakref.finalize(stream, slot.release)
    response = StreamingHttpResponse(stream, content_type="text/event-stream; charset=utf-8")
    add_never_cache_headers(response)
    response["X-Accel-Buffering"] = "no"  # nginx: do not buffer the stream
    return response


def _data(text: str) -> str:
    # A line break ends an SSE field: each line of the text is a data field of its own
    # (EventSource joins them with "\n").
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    return "".join(f"data: {line}\n" for line in lines)


def _event(message: Message, text: str, html: bool) -> str:
    """One SSE event. Only the stream's events carry an ``id`` (its position)."""
    payload = message.payload
    if message.type == "chunk":
        data = payload["data"]
        if html:
            text = escape(data if isinstance(data, str) else json.dumps(data))
        return f"event: chunk\nid: {payload['run']}:{payload['seq']}\n{_data(text)}\n"
    if message.type == "restart":
        # htmx swaps an event's data, and an event without data is never dispatched:
        # an HTML comment empties the text shown so far (hx-swap="innerHTML").
        data = "<!-- restart -->" if html else text
        return f"event: restart\nid: {payload['run']}:0\n{_data(data)}\n"
    out = f"data: {text}\n\n"
    if message.final:
        # htmx closes its EventSource on a named event (sse-close="end"); without it a
        # browser would reconnect, and get the outcome again, for ever.
        out += f"event: end\ndata: {message.type}\n\n"
    return out


async def _stream(
    ref: JobRef, record: Job, slot: Slot, after: Position, html: bool
) -> AsyncIterator[str]:
    try:
        # Middleware has answered by now: nothing more needs this request's thread.
        await release_request_resources()
        yield "retry: 2000\n\n"
        deadline = time.monotonic() + conf.STREAM_MAX_AGE
        async with get_hub().subscribe(
            ref.function, ref.key, record=record, after=after, summarised=ref.summary
        ) as subscription:
            while (left := deadline - time.monotonic()) > 0:
                message = await subscription.get(min(SSE_HEARTBEAT, left))
                if message is None:
                    yield ": keep-alive\n\n"
                    continue
                if message.type in (MISSING, BROKEN):
                    return  # the browser reconnects and gets a clear 404, or the stream again
                yield _event(message, message.for_reader(ref.summary)[1], html)
                if message.final:
                    return
            yield f"data: {RECONNECT}\n\n"
    finally:
        slot.release()


@require_GET
def download(request: HttpRequest, token: str) -> HttpResponseBase:
    """The non-HTML response of a finished offloaded view, as a file download."""
    found = _job(request, token)
    if isinstance(found, JsonResponse):
        return found
    ref, record = found
    result = open_response(record.result) if record.status == Status.COMPLETE else None
    # A summary token (the admin's) follows the job, but the file is its user's.
    if ref.function != OFFLOAD_FUNCTION or result is None or ref.summary:
        return _missing()
    stored = result.get("download")
    if not isinstance(stored, dict):
        return _missing()
    try:
        handle = default_storage.open(stored["path"], "rb")
    except FileNotFoundError:
        return _missing()
    response = FileResponse(
        handle,
        as_attachment=True,
        filename=stored["name"],
        content_type=result.get("content_type") or "application/octet-stream",
    )
    # A user's file: no shared cache may keep it, and the browser need not either.
    add_never_cache_headers(response)
    return response
