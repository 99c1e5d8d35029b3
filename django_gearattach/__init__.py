"""django-gearattach: background Gearman jobs you can attach to by key.

The public API is importable from here once Django is set up::

    from django_gearattach import task, submit, attach
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "task": "tasks",
    "Task": "tasks",
    "JobContext": "tasks",
    "current_job": "tasks",
    "submit": "submission",
    "asubmit": "submission",
    "attach": "attachment",
    "aattach": "attachment",
    "JobEvent": "attachment",
    "GearattachError": "exceptions",
    "InvalidKey": "exceptions",
    "BadPayload": "exceptions",
    "JobNotFound": "exceptions",
    "SubmitFailed": "exceptions",
    "AttachTimeout": "exceptions",
    "UnknownTask": "exceptions",
}

if TYPE_CHECKING:
    from .attachment import JobEvent, aattach, attach
    from .exceptions import (
        AttachTimeout,
        BadPayload,
        GearattachError,
        InvalidKey,
        JobNotFound,
        SubmitFailed,
        UnknownTask,
    )
    from .submission import asubmit, submit
    from .tasks import JobContext, Task, current_job, task

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    # Lazy, so that importing the package never touches models before apps are ready.
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'django_gearattach' has no attribute {name!r}")
    from importlib import import_module

    return getattr(import_module(f"django_gearattach.{module}"), name)
