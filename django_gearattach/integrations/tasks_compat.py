"""Django's tasks framework: ``django.tasks`` on Django 6, the ``django-tasks`` backport on 5.2.

The backport (``pip install django-tasks``, import name ``django_tasks``) has the same
API under other module names; the backend imports everything it needs from here. On
Django 5.2 without the backport, importing this module raises an :exc:`ImportError`
that says what to install.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import django

if TYPE_CHECKING or django.VERSION >= (6, 0):
    from django.tasks import default_task_backend, task, task_backends
    from django.tasks.backends.base import BaseTaskBackend
    from django.tasks.base import Task, TaskContext, TaskError, TaskResult, TaskResultStatus
    from django.tasks.exceptions import InvalidTask, TaskResultDoesNotExist, TaskResultMismatch
    from django.tasks.signals import task_enqueued, task_finished, task_started

    SOURCE = "django.tasks"
else:  # pragma: no cover - exercised on the Django 5.2 legs
    try:
        from django_tasks import default_task_backend, task, task_backends
        from django_tasks.backends.base import BaseTaskBackend
        from django_tasks.base import Task, TaskContext, TaskError, TaskResult, TaskResultStatus
        from django_tasks.exceptions import InvalidTaskError as InvalidTask
        from django_tasks.exceptions import TaskResultDoesNotExist, TaskResultMismatch
        from django_tasks.signals import task_enqueued, task_finished, task_started
    except ImportError as exc:
        raise ImportError(
            "django_gearattach.tasks_backend needs Django's tasks framework: Django 6.0 or "
            f"newer has it built in; this is Django {django.get_version()}, so install the "
            "backport: pip install django-tasks (and use 'from django_tasks import task'). "
            "Or use django_gearattach's own @task and submit(), which need neither."
        ) from exc

    SOURCE = "django_tasks"

__all__ = [
    "SOURCE",
    "BaseTaskBackend",
    "InvalidTask",
    "Task",
    "TaskContext",
    "TaskError",
    "TaskResult",
    "TaskResultDoesNotExist",
    "TaskResultMismatch",
    "TaskResultStatus",
    "default_task_backend",
    "task",
    "task_backends",
    "task_enqueued",
    "task_finished",
    "task_started",
]
