"""A Celery-compatible subset, so code written for Celery runs with its imports changed.

.. code-block:: python

    from . import Celery, shared_task   # was: from celery import ...
    from .result import AsyncResult   # was: from celery.result ...

Importing this package (and creating ``Celery(...)``) touches no model, no setting
and no app registry, so the standard ``proj/celery.py`` imported from
``proj/__init__.py`` loads before Django is set up. Tasks run as Gearman jobs under
their Celery names; a task id is the job key. See ``docs/celery.rst`` for the table of
what is supported and what is refused (with an error naming the feature).

The submodules mirror Celery's: :mod:`.result`, :mod:`.exceptions`, :mod:`.states`,
:mod:`.signals`, :mod:`.schedules` and :mod:`.utils.log`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, overload

from . import exceptions, schedules, signals, states
from .app import Celery, app, current_app
from .canvas import Signature, chain, chord, group, signature
from .exceptions import TaskFailed, TaskRevokedError
from .request import BoundTask, Request
from .result import AsyncResult, GroupResult
from .task import CeleryTask, make_decorator
from .utils import uuid

R = TypeVar("R")

__all__ = [
    "AsyncResult",
    "BoundTask",
    "Celery",
    "CeleryTask",
    "GroupResult",
    "Request",
    "Signature",
    "Task",
    "TaskFailed",
    "TaskRevokedError",
    "app",
    "chain",
    "chord",
    "current_app",
    "current_task",
    "exceptions",
    "group",
    "schedules",
    "shared_task",
    "signals",
    "signature",
    "states",
    "uuid",
]

#: ``from celery import Task`` for type annotations and ``isinstance`` checks.
Task = CeleryTask


@overload
def shared_task(func: Callable[..., R], /) -> CeleryTask[Any, R]: ...
@overload
def shared_task(
    *, name: str | None = None, bind: bool = False, **options: Any
) -> Callable[[Callable[..., R]], CeleryTask[Any, R]]: ...


def shared_task(
    func: Callable[..., R] | None = None,
    /,
    *,
    name: str | None = None,
    bind: bool = False,
    **options: Any,
) -> CeleryTask[Any, R] | Callable[[Callable[..., R]], CeleryTask[Any, R]]:
    """``@shared_task`` / ``@shared_task(bind=True, name="...", max_retries=5, ...)``."""
    decorate = make_decorator("@shared_task", None, name, bind, options)
    return decorate(func) if func is not None else decorate


class _CurrentTask:
    """``current_task``: the running task (bound), or None outside one."""

    def __getattr__(self, name: str) -> Any:
        from .request import _current

        bound = _current.get()
        if bound is None:
            raise AttributeError(f"no task is running, so current_task.{name} is not there")
        return getattr(bound, name)

    def __bool__(self) -> bool:
        from .request import _current

        return _current.get() is not None


current_task = _CurrentTask()
