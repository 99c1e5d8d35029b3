"""Celery's common task signals (``celery.signals``), sent where Celery sends them.

``before_task_publish`` and ``after_task_publish`` are sent in the process that
calls ``delay``/``apply_async``; ``task_prerun``, ``task_postrun``, ``task_success``,
``task_failure`` and ``task_retry`` in the worker around the task; ``task_revoked`` by
``AsyncResult.revoke()``. Receivers connect as with Celery, including as decorators
(``@task_success.connect`` or ``@task_success.connect(sender="proj.add")``), and get
the keyword arguments Celery documents for each signal.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any, overload

logger = logging.getLogger("django_gearattach.celery")

Receiver = Callable[..., Any]


class Signal:
    """A Celery-style signal: strong references, decorator-friendly ``connect``."""

    def __init__(self, name: str, providing_args: set[str] | None = None) -> None:
        self.name = name
        self._receivers: list[tuple[Receiver, Any]] = []
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<Signal: {self.name}>"

    @overload
    def connect(
        self, receiver: Receiver, /, *, sender: Any = None, **options: Any
    ) -> Receiver: ...
    @overload
    def connect(self, *, sender: Any = None, **options: Any) -> Callable[[Receiver], Receiver]: ...

    def connect(  # type: ignore[misc]
        self, receiver: Receiver | None = None, /, *, sender: Any = None, **options: Any
    ) -> Receiver | Callable[[Receiver], Receiver]:
        """Connect ``receiver``; with no receiver, return a decorator."""
        unknown = set(options) - {"weak", "dispatch_uid"}
        if unknown:
            raise TypeError(f"{self.name}.connect() got unexpected arguments {sorted(unknown)}")

        def add(func: Receiver) -> Receiver:
            with self._lock:
                if (func, sender) not in self._receivers:
                    self._receivers.append((func, sender))
            return func

        return add(receiver) if receiver is not None else add

    def disconnect(self, receiver: Receiver, sender: Any = None) -> bool:
        with self._lock:
            before = len(self._receivers)
            self._receivers = [
                (f, s) for f, s in self._receivers if not (f is receiver and s == sender)
            ]
            return len(self._receivers) != before

    @property
    def receivers(self) -> list[tuple[Receiver, Any]]:
        return list(self._receivers)

    def _matches(self, wanted: Any, sender: Any) -> bool:
        if wanted is None:
            return True
        if wanted is sender or wanted == sender:
            return True
        # Celery lets receivers name the task sender by its name.
        return isinstance(wanted, str) and getattr(sender, "name", None) == wanted

    def send(self, sender: Any = None, **named: Any) -> list[tuple[Receiver, Any]]:
        """Call every matching receiver; an exception in one is logged, not raised."""
        responses = []
        for receiver, wanted in self.receivers:
            if not self._matches(wanted, sender):
                continue
            try:
                responses.append((receiver, receiver(signal=self, sender=sender, **named)))
            except Exception as exc:
                logger.exception("signal %s: receiver %r raised", self.name, receiver)
                responses.append((receiver, exc))
        return responses

    send_robust = send


before_task_publish = Signal("before_task_publish")
after_task_publish = Signal("after_task_publish")
task_prerun = Signal("task_prerun")
task_postrun = Signal("task_postrun")
task_success = Signal("task_success")
task_failure = Signal("task_failure")
task_retry = Signal("task_retry")
task_revoked = Signal("task_revoked")

__all__ = [
    "Signal",
    "after_task_publish",
    "before_task_publish",
    "task_failure",
    "task_postrun",
    "task_prerun",
    "task_retry",
    "task_revoked",
    "task_success",
]
