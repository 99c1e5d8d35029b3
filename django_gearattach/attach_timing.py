"""How long an attacher waits for its first event: a hook for the metrics extra.

:func:`timed` wraps :func:`~django_gearattach.attachment.attach` and
:func:`~django_gearattach.attachment.aattach`; every callable in :data:`observers` is
called once per attach with the job's function name and the seconds from the call to
its first event (for a finished job: the record's lookup; for a queued or running one,
the wait until something about it arrives). Nothing is measured while the list is
empty.
"""

from __future__ import annotations

import functools
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import TYPE_CHECKING, Any, ParamSpec

if TYPE_CHECKING:
    from .attachment import JobEvent

P = ParamSpec("P")
Observer = Callable[[str, float], None]

#: Called as ``observer(function, seconds)``; the metrics app appends its own.
observers: list[Observer] = []


def _function(target: Any) -> str:
    return str(getattr(target, "function", None) or getattr(target, "name", None) or target)


def _notify(target: Any, started: float) -> None:
    seconds = time.monotonic() - started
    for observer in list(observers):
        observer(_function(target), seconds)


def timed(func: Callable[P, Iterator[JobEvent]]) -> Callable[P, Iterator[JobEvent]]:
    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> Iterator[JobEvent]:
        if not observers:
            yield from func(*args, **kwargs)
            return
        started, first = time.monotonic(), True
        for event in func(*args, **kwargs):
            if first:
                first = False
                _notify(args[0] if args else None, started)
            yield event

    return wrapper


def atimed(func: Callable[P, AsyncIterator[JobEvent]]) -> Callable[P, AsyncIterator[JobEvent]]:
    @functools.wraps(func)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> AsyncIterator[JobEvent]:
        started, first = time.monotonic(), bool(observers)
        async for event in func(*args, **kwargs):
            if first:
                first = False
                _notify(args[0] if args else None, started)
            yield event

    return wrapper
