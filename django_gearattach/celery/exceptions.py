"""Celery's exception names (``celery.exceptions``), raised by this shim."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from ..exceptions import AttachTimeout, GearattachError
from ..timelimits import SoftTimeLimitExceeded as SoftTimeLimitExceeded  # as in Celery
from ..timelimits import TimeLimitExceeded as TimeLimitExceeded


class CeleryError(GearattachError):
    """Base class of the shim's Celery-named errors."""


class TaskError(CeleryError):
    """A task-related error."""


class TimeoutError(AttachTimeout):
    """``AsyncResult.get(timeout=...)`` expired; the task keeps running.

    Also a builtin ``TimeoutError`` and an
    :class:`~django_gearattach.exceptions.AttachTimeout`.
    """


class Retry(TaskError):
    """Raised by ``self.retry()``: the task is scheduled to run again.

    Like Celery's, it is raised out of the task body; the worker recognises it and
    ends this run without recording a failure.
    """

    def __init__(
        self,
        message: str | None = None,
        exc: BaseException | None = None,
        when: float | datetime | None = None,
        **kwargs: Any,
    ) -> None:
        self.message = message
        self.exc = exc
        self.when = when
        super().__init__(message or (f"Retry in {when}" if when is not None else "Retry"))

    def humanize(self) -> str:
        return str(self)


RetryTaskError = Retry


class MaxRetriesExceededError(TaskError):
    """``self.retry()`` was called after ``max_retries`` retries, with no ``exc`` to raise."""

    def __init__(self, *args: Any, task_args: Any = None, task_kwargs: Any = None) -> None:
        super().__init__(*args)
        self.task_args = task_args
        self.task_kwargs = task_kwargs


class TaskRevokedError(TaskError):
    """The job was cancelled (``revoke()`` or the admin) before it started."""


class TaskFailed(TaskError):
    """A failed task whose exception class cannot be rebuilt here; has ``error``, ``traceback``."""

    def __init__(self, error: str, traceback: str = "") -> None:
        super().__init__(error)
        self.error = error
        self.traceback = traceback


class ChordError(TaskError):
    """A task of a chord's header failed, so its body never ran."""


class NotRegistered(CeleryError, KeyError):
    """No task of that name is registered in this process."""


class ImproperlyConfigured(CeleryError):
    """The Celery configuration asks for something this shim cannot do."""


class Ignore(TaskError):
    """Not supported here: raising it would leave the job's outcome undefined."""

    def __init__(self, *args: Any) -> None:
        raise NotImplementedError(
            "celery.exceptions.Ignore is not supported: a job always records an outcome; "
            "return early instead"
        )


class Reject(TaskError):
    """Not supported here: Gearman has no message acknowledgement to reject."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise NotImplementedError(
            "celery.exceptions.Reject is not supported: Gearman has no message "
            "acknowledgements; raise an exception to fail the job, or self.retry()"
        )


__all__ = [
    "CeleryError",
    "ChordError",
    "Ignore",
    "ImproperlyConfigured",
    "MaxRetriesExceededError",
    "NotRegistered",
    "Reject",
    "Retry",
    "RetryTaskError",
    "TaskError",
    "TaskFailed",
    "TaskRevokedError",
    "TimeoutError",
]
