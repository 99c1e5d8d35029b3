"""django-gearattach: background Gearman jobs you can attach to by key.

The public API is importable from here once Django is set up::

    from . import task, submit, attach
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
    "cancel": "operations",
    "JobCancelled": "exceptions",
    "SoftTimeLimitExceeded": "timelimits",
    "aattach": "attachment",
    "JobEvent": "attachment",
    "GearattachError": "exceptions",
    "InvalidKey": "exceptions",
    "BadPayload": "exceptions",
    "JobNotFound": "exceptions",
    "SubmitFailed": "exceptions",
    "AttachTimeout": "exceptions",
    "NoWorker": "exceptions",
    "UnknownTask": "exceptions",
}

if TYPE_CHECKING:
    from .attachment import JobEvent as JobEvent
    from .attachment import aattach as aattach
    from .attachment import attach as attach
    from .exceptions import AttachTimeout as AttachTimeout
    from .exceptions import BadPayload as BadPayload
    from .exceptions import GearattachError as GearattachError
    from .exceptions import InvalidKey as InvalidKey
    from .exceptions import JobCancelled as JobCancelled
    from .exceptions import JobNotFound as JobNotFound
    from .exceptions import NoWorker as NoWorker
    from .exceptions import SubmitFailed as SubmitFailed
    from .exceptions import UnknownTask as UnknownTask
    from .operations import cancel as cancel
    from .submission import asubmit as asubmit
    from .submission import submit as submit
    from .tasks import JobContext as JobContext
    from .tasks import Task as Task
    from .tasks import current_job as current_job
    from .tasks import task as task
    from .timelimits import SoftTimeLimitExceeded as SoftTimeLimitExceeded

__all__ = [
    "AttachTimeout",
    "BadPayload",
    "GearattachError",
    "InvalidKey",
    "JobCancelled",
    "JobContext",
    "JobEvent",
    "JobNotFound",
    "NoWorker",
    "SoftTimeLimitExceeded",
    "SubmitFailed",
    "Task",
    "UnknownTask",
    "aattach",
    "asubmit",
    "attach",
    "cancel",
    "current_job",
    "submit",
    "task",
]


def __getattr__(name: str) -> Any:
    # Lazy, so that importing the package never touches models before apps are ready.
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'django_gearattach' has no attribute {name!r}")
    from importlib import import_module

    return getattr(import_module(f"django_gearattach.{module}"), name)
