"""The spans of attachers: ``attach()``/``aattach()`` and each subscriber of the hub.

An attacher's span lasts from the call (or the subscription) to the outcome, or to
the attacher leaving. It is a child of the attacher's own context (the request, the
websocket, the task that waits) and links to the span that submitted the job, whose
child the job's run is. Attributes: ``gearattach.function``, ``gearattach.key``,
``gearattach.events`` (what it heard before the outcome), ``gearattach.told``
(``"at once"``: the outcome was the first thing it heard, the job had ended; or
``"live"``: it followed the job to its end), and ``gearattach.outcome``
(``complete``, ``failed``, or ``left``, ``timeout``, ``not found``, ``broken``).
``attach()``'s span is current while it reads the record, so database spans nest
under it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from typing import TYPE_CHECKING, Any

from asgiref.sync import sync_to_async
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from .. import records
from ..exceptions import AttachTimeout, JobNotFound
from ..models import Job
from . import tracer
from .carrier import job_link

if TYPE_CHECKING:
    from ..attachment import JobEvent
    from ..web.hub import JobFeed
    from ..web.messages import Message


def _names(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[str, str, Job | None]:
    target = args[0] if args else kwargs.get("job")
    key = args[1] if len(args) > 1 else kwargs.get("key")
    if isinstance(target, Job):
        return target.function, target.key, target
    name = getattr(target, "name", target)
    return str(name), str(key), None


def _arguments(record: Job | None) -> Any:
    """The record's arguments if they are loaded (never a query for a deferred field)."""
    if record is None or "arguments" not in record.__dict__:  # deferred: not loaded
        return None
    return record.arguments


class _Attach:
    """One attach call's span."""

    def __init__(self, function: str, key: str) -> None:
        self.function = function
        self.key = key
        self.events = 0
        self.ended = False
        self.span = tracer().start_span(
            f"attach {function}",
            kind=SpanKind.CONSUMER,
            attributes={"gearattach.function": function, "gearattach.key": key},
        )
        self.recording = self.span.is_recording()
        self.context = trace.set_span_in_context(self.span)

    def link(self, arguments: Any) -> None:
        if self.recording and arguments is not None:
            link = job_link(self.function, arguments, "job")
            if link is not None:
                self.span.add_link(link.context, link.attributes)

    def heard(self, event: JobEvent) -> None:
        if event.terminal:
            told = "at once" if self.events == 0 else "live"
            self.end(event.event, told)
        else:
            self.events += 1

    def end(self, outcome: str, told: str | None = None, error: str | None = None) -> None:
        if self.ended:
            return
        self.ended = True
        if self.recording:
            self.span.set_attributes(_ending_attributes(outcome, self.events, told))
            if error is not None:
                self.span.set_status(Status(StatusCode.ERROR, error))
        self.span.end()


def _ending(exc: BaseException) -> tuple[str, str | None]:
    if isinstance(exc, AttachTimeout):
        return "timeout", None
    if isinstance(exc, JobNotFound):
        return "not found", str(exc)
    if isinstance(exc, GeneratorExit | StopAsyncIteration):
        return "left", None
    return "broken", f"{type(exc).__name__}: {exc}"


def traced(
    func: Callable[..., Iterator[JobEvent]], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Iterator[JobEvent]:
    """``func(*args, **kwargs)`` (``attach``) inside an attacher's span."""
    function, key, record = _names(args, kwargs)
    attach = _Attach(function, key)
    inner: Iterator[JobEvent] | None = None
    done = False
    try:
        if attach.recording:
            arguments = _arguments(record)
            if arguments is None:
                with _current(attach.context):
                    found = records.get(function, key, ("arguments",))
                arguments = found.arguments if found is not None else None
            attach.link(arguments)
        inner = func(*args, **kwargs)
        while True:
            with _current(attach.context):
                try:
                    event = next(inner)
                except StopIteration:
                    break
            attach.heard(event)
            done = done or event.terminal
            yield event
    except BaseException as exc:
        if not done:
            attach.end(*_ending(exc))
        raise
    finally:
        close = getattr(inner, "close", None)
        if close is not None:
            close()  # what leaving attach() itself does: it lets go of the job
        attach.end("left")


async def atraced(
    func: Callable[..., AsyncIterator[JobEvent]], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> AsyncIterator[JobEvent]:
    """``func(*args, **kwargs)`` (``aattach``) inside an attacher's span."""
    function, key, record = _names(args, kwargs)
    attach = _Attach(function, key)
    inner: AsyncIterator[JobEvent] | None = None
    done = False
    try:
        if attach.recording:
            arguments = _arguments(record)
            if arguments is None:
                found = await sync_to_async(records.get)(function, key, ("arguments",))
                arguments = found.arguments if found is not None else None
            attach.link(arguments)
        inner = func(*args, **kwargs)
        while True:
            with _current(attach.context):
                try:
                    event = await anext(inner)
                except StopAsyncIteration:
                    break
            attach.heard(event)
            done = done or event.terminal
            yield event
    except BaseException as exc:
        if not done:
            attach.end(*_ending(exc))
        raise
    finally:
        aclose = getattr(inner, "aclose", None)
        if aclose is not None:
            await aclose()
        attach.end("left")


class _current:
    """Make ``context`` current for a block (the span stays open after it)."""

    def __init__(self, context: otel_context.Context) -> None:
        self.context = context

    def __enter__(self) -> None:
        self.token = otel_context.attach(self.context)

    def __exit__(self, *exc: object) -> None:
        otel_context.detach(self.token)


class Waiter:
    """One subscriber of the hub: a span from subscribing to the outcome, or leaving."""

    def __init__(self, feed: JobFeed) -> None:
        self.feed = feed
        self.heard = 0
        self.ended = False
        self.span: Span = tracer().start_span(
            f"wait {feed.function}",
            kind=SpanKind.CONSUMER,
            attributes={"gearattach.function": feed.function, "gearattach.key": feed.key},
        )

    def wrap(self, deliver: Callable[[Message], None]) -> Callable[[Message], None]:
        def delivered(message: Message) -> None:
            self.hear(message)
            deliver(message)

        return delivered

    def hear(self, message: Message) -> None:
        if self.ended:
            return
        if message.final:
            kind = message.type
            outcome = {"missing": "not found", "broken": "broken"}.get(kind, kind)
            self.end(outcome, "at once" if self.heard == 0 else "live")
        else:
            self.heard += 1

    def stopping(self, stop: Callable[[], None]) -> Callable[[], None]:
        def stopped() -> None:
            stop()
            self.leave()

        return stopped

    def leave(self) -> None:
        if not self.ended:
            self.end("left", None)

    def end(self, outcome: str, told: str | None) -> None:
        self.ended = True
        span = self.span
        if span.is_recording():
            record = self.feed.record
            link = job_link(self.feed.function, _arguments(record), "job") if record else None
            if link is not None:
                span.add_link(link.context, link.attributes)
            span.set_attributes(_ending_attributes(outcome, self.heard, told))
        span.end()


def _ending_attributes(outcome: str, events: int, told: str | None) -> dict[str, Any]:
    attributes: dict[str, Any] = {"gearattach.outcome": outcome, "gearattach.events": events}
    if told is not None:
        attributes["gearattach.told"] = told
    return attributes
