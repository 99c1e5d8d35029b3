"""A job record read as Celery reads a task's meta: its state, its exception, its message.

The record keeps the exception's module and qualified name (the worker writes them),
so a failure is rebuilt as the task's own exception class, nested ones
(``Widget.DoesNotExist``) included, whenever that class can be imported here.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from . import states
from .exceptions import Retry, TaskFailed, TaskRevokedError

if TYPE_CHECKING:
    from ..models import Job

_discovered = False


def find(task_id: str) -> Job | None:
    global _discovered
    from ..models import Job
    from ..tasks import registered_tasks

    if not _discovered:
        from .app import discover

        discover()
        _discovered = True
    names = list(registered_tasks())
    records = Job.objects.filter(key=task_id)
    found = records.filter(function__in=names).order_by("-created_at").first() if names else None
    return found or records.order_by("-created_at").first()


def tracks_started(function: str) -> bool:
    """Whether the task reports ``STARTED`` (``track_started``, or the app's
    ``task_track_started`` for a task this process does not know)."""
    from .config import configuration
    from .task import lookup

    task = lookup(function)
    if task is not None:
        return task.tracks_started
    return bool(configuration("task_track_started", False))


def custom(record: Job) -> tuple[str, Any] | tuple[None, None]:
    data = record.data
    if (
        isinstance(data, dict)
        and set(data) == {"state", "meta"}
        and isinstance(data["state"], str)
    ):
        return data["state"], data["meta"]
    return None, None


def state_of(record: Job | None) -> str:
    from ..models import Status

    if record is None:
        return states.PENDING
    if record.is_waiting:
        return states.RETRY if record.retries else states.PENDING
    if record.status == Status.RUNNING:
        named = custom(record)[0]
        if named:
            return named
        return states.STARTED if tracks_started(record.function) else states.PENDING
    if record.status == Status.COMPLETE:
        return states.SUCCESS
    if record.status == Status.CANCELLED:
        return states.REVOKED
    return states.FAILURE


def _exception_class(record: Job) -> type[BaseException] | None:
    if not record.exception_module or not record.exception_qualname:
        return None
    try:
        value: Any = importlib.import_module(record.exception_module)
    except ImportError:
        return None
    for part in record.exception_qualname.split("."):
        value = getattr(value, part, None)
    if isinstance(value, type) and issubclass(value, BaseException):
        return value
    return None


def exception_of(record: Job) -> BaseException:
    """The task's own exception, rebuilt from the module and name in the record."""
    from ..models import Status

    if record.status == Status.CANCELLED:
        return TaskRevokedError(record.error or "the job was cancelled")
    if record.is_waiting:
        return Retry(record.error or "the task will run again")
    error = record.failure_text
    cls = _exception_class(record)
    if cls is not None:
        prefix = f"{cls.__name__}: "
        message = error[len(prefix) :] if error.startswith(prefix) else error
        try:
            exc = cls(message)
        except Exception:
            pass
        else:
            exc.add_note(f"Raised in the worker:\n{record.traceback}")
            return exc
    return TaskFailed(error, record.traceback)


def message(record: Job) -> dict[str, Any]:
    """What Celery's ``on_message`` receives: the task's meta."""
    state = state_of(record)
    result: Any = None
    if state == states.SUCCESS:
        result = record.result
    elif state in states.EXCEPTION_STATES:
        result = {
            "exc_type": record.exception_qualname or "TaskFailed",
            "exc_message": [record.error],
            "exc_module": record.exception_module or "django_gearattach.celery.exceptions",
        }
    return {
        "task_id": record.key,
        "status": state,
        "result": result,
        "traceback": record.traceback or None,
        "children": [],
        "date_done": record.finished_at.isoformat() if record.finished_at else None,
    }
