"""A Celery-compatible subset, so code written for Celery runs with one import changed.

.. code-block:: python

    from django_gearattach.celery import shared_task       # was: from celery import ...
    from django_gearattach.celery import AsyncResult       # was: from celery.result import ...

Supported: ``@shared_task``, ``@shared_task(bind=True, name=...)``, ``app.task`` on a
:class:`Celery` app object, ``task.delay(...)``, ``task.apply_async(args, kwargs,
task_id=..., priority=...)``, ``self.update_state(state=..., meta=...)`` and
``self.request.id`` in bound tasks, and :class:`AsyncResult` with ``id``, ``state``/
``status``, ``result``/``info``, ``ready()``, ``successful()``, ``failed()``,
``get(timeout=, propagate=)``, ``traceback`` and ``revoke()`` (queued jobs only).
Anything Gearman cannot honour raises :exc:`NotImplementedError` naming it.

How Celery's ids map onto jobs: a task id **is** the job key, and a task's name is
its Gearman function name (Celery's default, ``"module.function"``, is ours too). An
``AsyncResult`` made by ``delay``/``apply_async`` or by ``task.AsyncResult(id)`` knows
its function. A bare ``AsyncResult(id)`` looks the key up among the jobs of the
tasks registered in this process (through the unique (function, key) index; the
``tasks`` modules of installed apps are imported first, as the worker does), and if
none matches, among all jobs; the most recent match wins. Gearman needs keys unique
across functions anyway (GET_STATUS_UNIQUE ignores the function), and random task
ids are.

Unknown ids: like Celery, ``AsyncResult("nonsense").state`` is ``"PENDING"``, but
unlike Celery you can tell it from a job that waits: ``.known`` is False, and
``.get()`` raises :class:`~django_gearattach.exceptions.JobNotFound` at once instead
of waiting forever.
"""

from __future__ import annotations

import contextvars
import functools
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, ParamSpec, TypeVar, overload

from django.utils.module_loading import autodiscover_modules

from .attachment import attach
from .exceptions import GearattachError, JobNotFound
from .models import Job, Status
from .submission import submit
from .tasks import JobContext, registered_tasks
from .tasks import task as register_task

P = ParamSpec("P")
R = TypeVar("R")

__all__ = [
    "AsyncResult",
    "Celery",
    "CeleryTask",
    "TaskFailed",
    "TaskRevokedError",
    "app",
    "current_task",
    "shared_task",
    "states",
]


class states:  # named like the celery.states module that code imports
    """The state names of ``celery.states`` that this shim produces."""

    PENDING = "PENDING"
    STARTED = "STARTED"
    PROGRESS = "PROGRESS"
    SUCCESS = "SUCCESS"
    FAILURE = "FAILURE"
    REVOKED = "REVOKED"
    READY_STATES = frozenset({SUCCESS, FAILURE, REVOKED})
    UNREADY_STATES = frozenset({PENDING, STARTED, PROGRESS})
    EXCEPTION_STATES = frozenset({FAILURE, REVOKED})


class TaskFailed(GearattachError):
    """A failed task whose exception class cannot be rebuilt here; has ``error``, ``traceback``."""

    def __init__(self, error: str, traceback: str = "") -> None:
        super().__init__(error)
        self.error = error
        self.traceback = traceback


class TaskRevokedError(GearattachError):
    """The job was cancelled (``revoke()`` or the admin) before it started."""


_UNSUPPORTED = {
    "countdown": "Gearman has no delayed jobs; submit the task when it should run",
    "eta": "Gearman has no delayed jobs; submit the task when it should run",
    "expires": "Gearman jobs do not expire; cancel queued jobs with revoke() instead",
    "queue": "Gearman has no named queues: jobs are routed by task name, so start "
    "`manage.py gearworker --function NAME` on the workers that should run them",
    "routing_key": "Gearman routes jobs by task name and key, not by routing keys",
    "exchange": "Gearman has no exchanges",
    "link": "there are no callbacks or chains; call the next task from the first one",
    "link_error": "there are no error callbacks; connect to the job_finished signal",
    "retry": "submission fails over between the configured servers on its own",
    "retry_policy": "submission fails over between the configured servers on its own",
    "soft_time_limit": "Gearman has no time limits; enforce them inside the task",
    "time_limit": "Gearman has no time limits; enforce them inside the task",
    "shadow": "a job's name is its Gearman function name",
    "headers": "Gearman jobs carry only JSON arguments",
    "serializer": "arguments and results are always JSON",
    "compression": "arguments and results are always JSON",
    "ignore_result": "every job's result is recorded",
}


def _unsupported(option: str) -> NotImplementedError:
    reason = _UNSUPPORTED.get(option, "this Celery option has no Gearman equivalent")
    return NotImplementedError(f"apply_async({option}=...) is not supported: {reason}.")


def _gearman_priority(priority: int | str | None) -> str | None:
    """Celery's 0 (lowest) to 9 (highest, AMQP style) as Gearman's low/normal/high."""
    if priority is None or isinstance(priority, str):
        return priority
    if not isinstance(priority, int) or not 0 <= priority <= 255:
        raise ValueError(f"priority must be an integer from 0 to 255, got {priority!r}")
    return "low" if priority <= 2 else "normal" if priority <= 6 else "high"


@dataclass
class Request:
    """``self.request`` in a bound task."""

    id: str | None = None
    task: str = ""
    args: list[Any] = field(default_factory=list)
    kwargs: dict[str, Any] = field(default_factory=dict)
    hostname: str | None = None
    retries: int = 0
    called_directly: bool = True


_current: contextvars.ContextVar[BoundTask | None] = contextvars.ContextVar(
    "gearattach_celery_task", default=None
)


class BoundTask:
    """What a bound task receives as ``self``: the task, plus this run's request."""

    def __init__(self, task: CeleryTask[Any, Any], context: JobContext | None, request: Request):
        self._task = task
        self._context = context
        self.request = request

    def __getattr__(self, name: str) -> Any:
        return getattr(self._task, name)

    def update_state(
        self,
        task_id: str | None = None,
        state: str | None = None,
        meta: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        """Report a state: ``meta["current"]``/``meta["total"]`` become WORK_STATUS and
        the record's progress; state and meta become the job's data (WORK_DATA), which
        ``AsyncResult.state``/``.info`` read back. Outside a worker it does nothing,
        as calling a Celery task directly stores nothing.
        """
        if task_id is not None and task_id != self.request.id:
            raise NotImplementedError(
                "update_state() can only update the running task's own state"
            )
        if self._context is None:
            return
        meta = dict(meta or {})
        current, total = meta.get("current"), meta.get("total")
        if isinstance(current, (int, float)) and isinstance(total, (int, float)):
            self._context.progress(int(current), int(total))
        self._context.data({"state": state or states.PROGRESS, "meta": meta})


class CeleryTask(Generic[P, R]):
    """A task made by :func:`shared_task` or :meth:`Celery.task`."""

    def __init__(self, func: Callable[..., R], name: str, bind: bool) -> None:
        self.run = func
        self.name = name
        self.bind = bind
        functools.update_wrapper(self, func)

        @functools.wraps(func)
        def execute(context: JobContext, *args: Any, **kwargs: Any) -> R:
            return self._execute(context, list(args), kwargs)

        # Registered under the task's name, so gearworker runs it like any @task.
        self.gearman_task = register_task(name=name, bind=True)(execute)

    def __repr__(self) -> str:
        return f"<@task: {self.name}>"

    def _execute(self, context: JobContext | None, args: list[Any], kwargs: dict[str, Any]) -> R:
        request = Request(task=self.name, args=args, kwargs=kwargs)
        if context is not None:
            request.id, request.called_directly = context.key, False
        bound = BoundTask(self, context, request)
        token = _current.set(bound)
        try:
            if self.bind:
                return self.run(bound, *args, **kwargs)
            return self.run(*args, **kwargs)
        finally:
            _current.reset(token)

    def __call__(self, *args: Any, **kwargs: Any) -> R:
        """Run the task here and now, as calling a Celery task does."""
        return self._execute(None, list(args), kwargs)

    def delay(self, *args: Any, **kwargs: Any) -> AsyncResult:
        """Submit the task as a background job: ``apply_async(args, kwargs)``."""
        return self.apply_async(args, kwargs)

    def apply_async(
        self,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        task_id: str | None = None,
        priority: int | str | None = None,
        **options: Any,
    ) -> AsyncResult:
        """Submit the task. ``task_id`` becomes the job key: submitting an id whose job
        is queued or running joins it, and one whose job finished returns its stored
        outcome (task ids are idempotent here). ``priority`` 0-2 is Gearman's low,
        3-6 normal, 7 and above high (or pass "low", "normal", "high").
        """
        for option in options:
            raise _unsupported(option)
        job = submit(
            self.name, args or (), kwargs or {}, key=task_id, priority=_gearman_priority(priority)
        )
        return AsyncResult(job.key, task_name=self.name)

    def AsyncResult(self, task_id: str) -> AsyncResult:
        return AsyncResult(task_id, task_name=self.name)

    def s(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError("signatures, chains and groups are not supported")

    si = signature = s

    def retry(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(
            "task retries are not supported; GEARATTACH['MAX_ATTEMPTS'] covers crashed workers"
        )

    def apply(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(
            'apply() is not supported; set GEARATTACH["IMMEDIATE"] = True in tests instead'
        )


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
    """``@shared_task`` / ``@shared_task(bind=True, name="...")``."""
    for option in options:
        raise NotImplementedError(
            f"@shared_task({option}=...) is not supported: this Celery option has no "
            "Gearman equivalent."
        )

    def decorate(f: Callable[..., R]) -> CeleryTask[Any, R]:
        return CeleryTask(f, name or f"{f.__module__}.{f.__name__}", bind)

    return decorate(func) if func is not None else decorate


class Celery:
    """An app object for ``app = Celery("proj")`` and ``@app.task`` code.

    Configuration calls are accepted and ignored: the settings are ``GEARATTACH``.
    """

    def __init__(self, main: str | None = None, *args: Any, **kwargs: Any) -> None:
        self.main = main

    @overload
    def task(self, func: Callable[..., R], /) -> CeleryTask[Any, R]: ...
    @overload
    def task(
        self, /, *, name: str | None = None, bind: bool = False, **options: Any
    ) -> Callable[[Callable[..., R]], CeleryTask[Any, R]]: ...

    def task(
        self,
        func: Callable[..., R] | None = None,
        /,
        *,
        name: str | None = None,
        bind: bool = False,
        **options: Any,
    ) -> CeleryTask[Any, R] | Callable[[Callable[..., R]], CeleryTask[Any, R]]:
        """``@app.task`` / ``@app.task(bind=True, name=...)``: as :func:`shared_task`."""
        decorate = shared_task(name=name, bind=bind, **options)
        return decorate(func) if func is not None else decorate

    def config_from_object(self, *args: Any, **kwargs: Any) -> None:
        """Ignored: configure the app with ``GEARATTACH`` in Django's settings."""

    def autodiscover_tasks(self, *args: Any, **kwargs: Any) -> None:
        """Imports each installed app's ``tasks`` module, as ``gearworker`` does."""
        autodiscover_modules("tasks")

    def AsyncResult(self, task_id: str) -> AsyncResult:
        return AsyncResult(task_id)


#: A ready-made app object: ``from django_gearattach.celery import app``.
app = Celery("django_gearattach")


class _CurrentTask:
    """``current_task``: the running task (bound), or None outside one."""

    def __getattr__(self, name: str) -> Any:
        bound = _current.get()
        if bound is None:
            raise AttributeError(f"no task is running, so current_task.{name} is not there")
        return getattr(bound, name)

    def __bool__(self) -> bool:
        return _current.get() is not None


current_task = _CurrentTask()


_discovered = False


def _find(task_id: str) -> Job | None:
    global _discovered
    if not _discovered:
        autodiscover_modules("tasks")
        _discovered = True
    names = list(registered_tasks())
    records = Job.objects.filter(key=task_id)
    found = records.filter(function__in=names).order_by("-created_at").first() if names else None
    return found or records.order_by("-created_at").first()


class AsyncResult:
    """The state and outcome of a task id; every attribute reads the job record afresh."""

    def __init__(
        self, id: str, backend: Any = None, task_name: str | None = None, app: Any = None
    ) -> None:
        self.id = id
        self.task_name = task_name

    @property
    def task_id(self) -> str:
        return self.id

    def __repr__(self) -> str:
        return f"<AsyncResult: {self.id}>"

    def __eq__(self, other: object) -> bool:
        if isinstance(other, AsyncResult):
            return self.id == other.id
        return other == self.id

    def __hash__(self) -> int:
        return hash(self.id)

    def _record(self) -> Job | None:
        if self.task_name is not None:
            return Job.objects.for_key(self.task_name, self.id).first()
        record = _find(self.id)
        if record is not None:
            self.task_name = record.function
        return record

    @property
    def known(self) -> bool:
        """Whether a job with this id exists (False: ``PENDING`` means "never heard of")."""
        return self._record() is not None

    @property
    def state(self) -> str:
        return _state(self._record())

    status = state

    @property
    def result(self) -> Any:
        """The return value; the exception of a failure; the meta of a custom state;
        ``{"pid": ..., "hostname": ...}`` while started; None while pending."""
        record = self._record()
        state = _state(record)
        if record is None or state == states.PENDING:
            return None
        if state == states.SUCCESS:
            return record.result
        if state in states.EXCEPTION_STATES:
            return _exception(record)
        if state == states.STARTED:
            return {"pid": record.worker_pid, "hostname": record.worker_host}
        return _custom(record)[1]

    info = result

    @property
    def traceback(self) -> str | None:
        record = self._record()
        return (record.traceback or None) if record is not None else None

    @property
    def date_done(self) -> datetime | None:
        record = self._record()
        return record.finished_at if record is not None else None

    @property
    def name(self) -> str | None:
        if self.task_name is None:
            self._record()
        return self.task_name

    def ready(self) -> bool:
        return self.state in states.READY_STATES

    def successful(self) -> bool:
        return self.state == states.SUCCESS

    def failed(self) -> bool:
        return self.state == states.FAILURE

    def get(self, timeout: float | None = None, propagate: bool = True, **options: Any) -> Any:
        """Wait for the outcome (by attaching to the job, not by polling) and return it.

        A failure raises the task's exception (rebuilt from the record when its class
        is importable here, else :class:`TaskFailed`) when ``propagate``, else returns
        it. Raises :class:`~django_gearattach.exceptions.AttachTimeout` (a
        ``TimeoutError``) after ``timeout`` seconds, and ``JobNotFound`` for an
        unknown id. Celery's ``interval`` and similar options are accepted and unused.
        """
        record = self._record()
        if record is None:
            raise JobNotFound(self.task_name or "?", self.id)
        if not record.is_finished:
            for _event in attach(record, timeout=timeout):
                pass
            record = self._record()
            assert record is not None
        if record.status == Status.COMPLETE:
            return record.result
        exc = _exception(record)
        if propagate:
            raise exc
        return exc

    wait = get

    def revoke(self, terminate: bool = False, **kwargs: Any) -> None:
        """Cancel the job if it is still queued (Gearman cannot stop a running one)."""
        if terminate:
            raise NotImplementedError("Gearman cannot stop a job that a worker has started")
        from .operations import cancel

        record = self._record()
        if record is not None:
            cancel(record)

    def forget(self) -> None:
        """Delete the record of a finished job."""
        record = self._record()
        if record is not None and record.is_finished:
            record.delete()


def _custom(record: Job) -> tuple[str, Any] | tuple[None, None]:
    data = record.data
    if (
        isinstance(data, dict)
        and set(data) == {"state", "meta"}
        and isinstance(data["state"], str)
    ):
        return data["state"], data["meta"]
    return None, None


def _state(record: Job | None) -> str:
    if record is None or record.is_waiting:
        return states.PENDING
    if record.status == Status.RUNNING:
        return _custom(record)[0] or states.STARTED
    if record.status == Status.COMPLETE:
        return states.SUCCESS
    if record.status == Status.CANCELLED:
        return states.REVOKED
    return states.FAILURE


def _exception(record: Job) -> BaseException:
    """The task's exception, rebuilt from the record where its class is already imported."""
    if record.status == Status.CANCELLED:
        return TaskRevokedError(record.error or "the job was cancelled")
    error = record.error or f"the job was {record.status}"
    class_path = _raised_class(record.traceback)
    if class_path:
        module, _, name = class_path.rpartition(".")
        cls = getattr(sys.modules.get(module or "builtins"), name, None)
        if isinstance(cls, type) and issubclass(cls, Exception):
            message = error.partition(": ")[2] if error.startswith(f"{name}: ") else error
            try:
                exc = cls(message)
            except Exception:
                pass
            else:
                exc.add_note(f"Raised in the worker:\n{record.traceback}")
                return exc
    return TaskFailed(error, record.traceback)


def _raised_class(traceback: str) -> str:
    """The (qualified) class name in a formatted traceback's last exception line."""
    lines = traceback.rstrip().splitlines()
    last_frame = max((i for i, line in enumerate(lines) if line.startswith(" ")), default=-1)
    if last_frame + 1 >= len(lines):
        return ""
    header = lines[last_frame + 1]
    name = header.partition(":")[0].strip()
    return name if name.replace(".", "").replace("_", "").isalnum() else ""
