"""A Django Tasks backend that runs ``@task`` functions as Gearman jobs.

It works with ``django.tasks`` on Django 6 and with the ``django-tasks`` backport
(``from django_tasks import task``) on Django 5.2 LTS.

.. code-block:: python

    TASKS = {"default": {"BACKEND": "django_gearattach.tasks_backend.GearmanBackend"}}

``task.enqueue(...)`` submits a background job (``submit``) whose Gearman function
name is the task's ``module_path``; ``manage.py gearworker`` runs it, since a Django
task is registered with this app when it is defined (keep them in an installed app's
``tasks.py``, which the worker imports). A ``TaskResult``'s id is the job key, and its
fields come from the job record: status, enqueued/started/finished times, arguments,
errors (exception class and traceback), worker ids and the return value. Priorities
above 0 are Gearman's high, below 0 low. ``run_after`` schedules the job
(``submit(run_at=...)``: gearmand's SUBMIT_JOB_EPOCH holds it until then, and its
result is ``READY`` meanwhile); a time already past runs it now. ``queue_name`` is
validated against ``QUEUES`` as Django does, but Gearman routes by function name, so
every queue is one.

Time limits: the backend's ``OPTIONS`` may name them per task, by ``module_path``
(``{"TIME_LIMITS": {"app.tasks.crunch": {"time_limit": 60, "soft_time_limit": 50}}}``);
``GEARATTACH["TIME_LIMIT"]`` and ``["SOFT_TIME_LIMIT"]`` apply to the others.

Key policies: a Django task has no key of its own; ``OPTIONS["KEY_POLICIES"]`` may
give a task one made of some of its arguments, with ``on_conflict`` and ``max_age``
(see :mod:`~django_gearattach.integrations.tasks_policies`, which says what does not
map).

``task_enqueued`` is sent by ``enqueue`` in the submitting process, ``task_started``
and ``task_finished`` by the worker process around the task (``task_finished`` from
inside the exception handler on failure, as Django's own backends do). In immediate
mode (``GEARATTACH["IMMEDIATE"]``) all three are sent in the submitting process, in
that order.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from inspect import iscoroutinefunction
from traceback import format_exception
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from asgiref.sync import sync_to_async
from django.core.exceptions import ImproperlyConfigured
from django.utils import timezone
from django.utils.module_loading import autodiscover_modules, import_string

from ..conf import conf
from ..payload import new_key, to_json_value
from ..tasks import JobContext, registered_tasks
from ..tasks import task as register_task
from .tasks_compat import (
    BaseTaskBackend,
    Task,
    TaskContext,
    TaskError,
    TaskResult,
    TaskResultDoesNotExist,
    TaskResultStatus,
    task_enqueued,
    task_finished,
    task_started,
)
from .tasks_policies import TaskKeyPolicy, key_policy

if TYPE_CHECKING:
    from ..models import Job

__all__ = ["GearmanBackend", "result_from_record"]

P = ParamSpec("P")
R = TypeVar("R")

_STATUS = {
    "scheduled": TaskResultStatus.READY,
    "queued": TaskResultStatus.READY,
    "running": TaskResultStatus.RUNNING,
    "complete": TaskResultStatus.SUCCESSFUL,
}
_NOT_AN_EXCEPTION = "django_gearattach.exceptions.GearattachError"


def gearman_priority(priority: int) -> str:
    """Django's -100..100 (higher runs first) as Gearman's low/normal/high."""
    return "high" if priority > 0 else "low" if priority < 0 else "normal"


def _exception_path(record: Job) -> str:
    """The dotted path of the exception the task raised, as the worker stored it; a job
    that failed without one (lost, cancelled, a bad payload) names the app's error."""
    if record.exception_module and record.exception_qualname:
        return f"{record.exception_module}.{record.exception_qualname}"
    return _NOT_AN_EXCEPTION


def result_from_record(task: Task[P, R], record: Job, backend: str) -> TaskResult[P, R]:
    """A ``TaskResult`` with the record's status, times, arguments, errors and value."""
    status = _STATUS.get(record.status, TaskResultStatus.FAILED)
    arguments = record.arguments or {}
    errors = []
    if status == TaskResultStatus.FAILED:
        errors.append(
            TaskError(
                exception_class_path=_exception_path(record),
                traceback=record.traceback or record.failure_text,
            )
        )
    # The record keeps the last worker only; it stands for each attempt.
    worker = f"{record.worker_host}:{record.worker_pid}" if record.worker_host else ""
    result = TaskResult(
        task=task,
        id=record.key,
        status=status,
        enqueued_at=record.created_at,
        started_at=record.started_at,
        finished_at=record.finished_at,
        last_attempted_at=record.started_at,
        args=list(arguments.get("args", [])),
        kwargs=dict(arguments.get("kwargs", {})),
        backend=backend,
        errors=errors,
        worker_ids=[worker] * record.attempts if worker else [],
    )
    if status == TaskResultStatus.SUCCESSFUL:
        object.__setattr__(result, "_return_value", record.result)
    return result


def _started(task: Task[..., Any], context: JobContext) -> TaskResult[..., Any]:
    """In the worker, before the task: its result as the record says, and task_started."""
    from ..models import Job

    record = Job.objects.for_key(context.function, context.key).get()
    result = result_from_record(task, record, task.backend)
    task_started.send(GearmanBackend, task_result=result)
    return result


def _failed(result: TaskResult[..., Any], exc: BaseException) -> None:
    object.__setattr__(result, "status", TaskResultStatus.FAILED)
    object.__setattr__(result, "finished_at", timezone.now())
    cls = type(exc)
    result.errors.append(
        TaskError(
            exception_class_path=f"{cls.__module__}.{cls.__qualname__}",
            traceback="".join(format_exception(exc)),
        )
    )
    task_finished.send(GearmanBackend, task_result=result)


def _succeeded(result: TaskResult[..., Any], value: Any) -> Any:
    value = to_json_value(value)
    object.__setattr__(result, "status", TaskResultStatus.SUCCESSFUL)
    object.__setattr__(result, "finished_at", timezone.now())
    object.__setattr__(result, "_return_value", value)
    task_finished.send(GearmanBackend, task_result=result)
    return value


def _run(
    task: Task[..., Any], context: JobContext, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """Runs in the worker: the task, framed by ``task_started`` and ``task_finished``."""
    result = _started(task, context)
    try:
        if task.takes_context:
            value = task.call(TaskContext(task_result=result), *args, **kwargs)
        else:
            value = task.call(*args, **kwargs)
        value = to_json_value(value)
    except Exception as exc:
        _failed(result, exc)
        raise
    return _succeeded(result, value)


async def _arun(
    task: Task[..., Any], context: JobContext, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """An ``async def`` task, awaited natively on the worker's event loop (no thread held
    while it awaits); the record's reads and the signals run in a thread."""
    result = await sync_to_async(_started, thread_sensitive=False)(task, context)
    try:
        if task.takes_context:
            value = await task.acall(TaskContext(task_result=result), *args, **kwargs)
        else:
            value = await task.acall(*args, **kwargs)
        value = to_json_value(value)
    except Exception as exc:
        await sync_to_async(_failed, thread_sensitive=False)(result, exc)
        raise
    return await sync_to_async(_succeeded, thread_sensitive=False)(result, value)


def _register(task: Task[..., Any], limits: Mapping[str, Any] | None = None) -> None:
    """Make the task runnable by ``gearworker`` under its ``module_path``."""
    limits = limits or {}
    existing = registered_tasks().get(task.module_path)
    previous = getattr(existing.func, "django_task", None) if existing is not None else None
    if previous is not None and previous.func is task.func and previous.backend == task.backend:
        return

    run: Any
    if iscoroutinefunction(task.func):

        @functools.wraps(task.func)
        async def run(context: JobContext, *args: Any, **kwargs: Any) -> Any:
            return await _arun(task, context, args, kwargs)

    else:

        @functools.wraps(task.func)
        def run(context: JobContext, *args: Any, **kwargs: Any) -> Any:
            return _run(task, context, args, kwargs)

    run.django_task = task
    register_task(
        name=task.module_path,
        bind=True,
        time_limit=limits.get("time_limit"),
        soft_time_limit=limits.get("soft_time_limit"),
    )(run)


def _django_tasks() -> dict[str, Task[..., Any]]:
    tasks = {}
    for name, registered in registered_tasks().items():
        django_task = getattr(registered.func, "django_task", None)
        if django_task is not None:
            tasks[name] = django_task
    return tasks


class GearmanBackend(BaseTaskBackend):
    """Runs Django tasks as Gearman background jobs; results come from job records."""

    supports_defer = True
    supports_async_task = True
    supports_get_result = True
    supports_priority = True

    def __init__(self, alias: str, params: dict[str, Any]) -> None:
        super().__init__(alias, params)
        self._discovered = False

    def validate_task(self, task: Task[..., Any]) -> None:
        super().validate_task(task)
        self.key_policy(task)
        _register(task, self.time_limits(task.module_path))

    def key_policy(self, task: Task[..., Any]) -> TaskKeyPolicy | None:
        """``OPTIONS["KEY_POLICIES"][module_path]``: the task's key and its policy."""
        return key_policy(self.options, task)

    def time_limits(self, module_path: str) -> Mapping[str, Any] | None:
        """``OPTIONS["TIME_LIMITS"][module_path]``: the task's time_limit/soft_time_limit."""
        configured = self.options.get("TIME_LIMITS", {})
        if not isinstance(configured, Mapping):
            raise ImproperlyConfigured(
                "TASKS OPTIONS['TIME_LIMITS'] must map task module paths to "
                "{'time_limit': seconds, 'soft_time_limit': seconds}"
            )
        limits = configured.get(module_path)
        unknown = set(limits or {}) - {"time_limit", "soft_time_limit"}
        if unknown:
            raise ImproperlyConfigured(
                f"TASKS OPTIONS['TIME_LIMITS'][{module_path!r}]: unknown option(s) "
                f"{', '.join(sorted(unknown))}; use time_limit and soft_time_limit"
            )
        return limits

    def _submit_args(
        self, task: Task[..., Any], args: Sequence[Any], kwargs: Mapping[str, Any]
    ) -> Any:
        options = {
            "task": task.module_path,
            "args": list(args),
            "kwargs": dict(kwargs),
            "priority": gearman_priority(task.priority),
            "run_at": task.run_after,
        }
        keyed = self.key_policy(task)
        if keyed is not None:
            options.update(key=keyed.key_for(task, args, kwargs), **keyed.submit_options())
        return options

    def enqueue(
        self, task: Task[P, R], args: Sequence[Any], kwargs: Mapping[str, Any]
    ) -> TaskResult[P, R]:
        from ..submission import submit

        self.validate_task(task)
        options = self._submit_args(task, args, kwargs)
        if conf.IMMEDIATE:
            # The task runs inside submit(): announce it first, as ImmediateBackend does.
            options.setdefault("key", new_key())
            self._announce(task, options["key"], options)
            job = submit(**options)
            return result_from_record(task, job, self.alias)
        job = submit(**options)
        result = result_from_record(task, job, self.alias)
        task_enqueued.send(type(self), task_result=result)
        return result

    async def aenqueue(
        self, task: Task[P, R], args: Sequence[Any], kwargs: Mapping[str, Any]
    ) -> TaskResult[P, R]:
        from ..submission import asubmit

        if conf.IMMEDIATE:
            return await sync_to_async(self.enqueue)(task, args, kwargs)
        self.validate_task(task)
        job = await asubmit(**self._submit_args(task, args, kwargs))
        result = result_from_record(task, job, self.alias)
        await task_enqueued.asend(type(self), task_result=result)
        return result

    def _announce(self, task: Task[..., Any], key: str, options: dict[str, Any]) -> None:
        result = TaskResult(
            task=task,
            id=key,
            status=TaskResultStatus.READY,
            enqueued_at=timezone.now(),
            started_at=None,
            finished_at=None,
            last_attempted_at=None,
            args=options["args"],
            kwargs=options["kwargs"],
            backend=self.alias,
            errors=[],
            worker_ids=[],
        )
        task_enqueued.send(type(self), task_result=result)

    def get_result(self, result_id: str) -> TaskResult[..., Any]:
        """The result of the job whose key is ``result_id``.

        The key is looked up among this process's Django tasks (the unique
        (function, key) index; installed apps' ``tasks`` modules are imported first),
        then among all jobs. Raises ``TaskResultDoesNotExist`` for an unknown id or a
        job that is not a Django task of this backend.
        """
        from ..models import Job

        if not self._discovered:
            autodiscover_modules("tasks")
            self._discovered = True
        known = _django_tasks()
        jobs = Job.objects.filter(key=result_id)
        record = jobs.filter(function__in=list(known)).order_by("-created_at").first()
        if record is None:
            record = jobs.order_by("-created_at").first()
        if record is None:
            raise TaskResultDoesNotExist(result_id)
        task = known.get(record.function) or _import_task(record.function)
        if task is None or task.backend != self.alias:
            raise TaskResultDoesNotExist(result_id)
        return result_from_record(task, record, self.alias)

    async def aget_result(self, result_id: str) -> TaskResult[..., Any]:
        return await sync_to_async(self.get_result)(result_id)


def _import_task(path: str) -> Task[..., Any] | None:
    try:
        value = import_string(path)
    except ImportError:
        return None
    return value if isinstance(value, Task) else None
