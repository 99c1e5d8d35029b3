"""Celery tasks as Gearman jobs: ``@shared_task``/``@app.task``, ``self.request``,
``self.retry()``, autoretry, ``track_started``, ``ignore_result``, signals.

A task is registered with this app under its Celery name, so ``gearworker`` runs it.
Celery's per-run bookkeeping (the retry count, the rest of a chain, a chord's body)
travels with the job's own arguments, in the reserved keyword argument
``__celery__``, which the worker removes before calling the function: it is in the
record, so a revived or retried job keeps it, and nothing else needs storing.

Running a task in the worker is :mod:`.execution`; what it sees as ``self`` is
:mod:`.request`. Importing this module touches no model and no setting.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, TypeVar

from ..tasks import JobContext, registered_tasks
from ..tasks import task as register_task
from .exceptions import Retry
from .request import META, Request, current_bound

if TYPE_CHECKING:
    from .canvas import Signature
    from .result import AsyncResult

__all__ = ["META", "CeleryTask", "Request", "lookup", "make_decorator"]

P = ParamSpec("P")
R = TypeVar("R")

#: Task options honoured (``@app.task(...)`` and class attributes of the same names).
TASK_OPTIONS: dict[str, Any] = {
    "ignore_result": None,  # None: the app's task_ignore_result (default False)
    "track_started": None,  # None: the app's task_track_started (default False)
    "max_retries": 3,
    "default_retry_delay": 180,
    "autoretry_for": (),
    "dont_autoretry_for": (),
    "retry_kwargs": {},
    "retry_backoff": False,
    "retry_backoff_max": 600,
    "retry_jitter": True,
    "priority": None,
    "serializer": "json",
    "acks_late": True,
    "typing": True,
    # Enforced by the worker's watchdog (django_gearattach.timelimits).
    "time_limit": None,
    "soft_time_limit": None,
    # Enforced by the workers together (django_gearattach.ratelimits).
    "rate_limit": None,
    # The key policy of a task id (django_gearattach.policies): this app's own options.
    "on_conflict": None,
    "max_age": None,
}

#: Why the other task options are refused, named in the error.
UNSUPPORTED_TASK_OPTIONS = {
    "queue": "Gearman has no named queues: jobs are routed by task name, so start "
    "gearworker --function NAME on the workers that should run them",
    "base": "custom Task classes are not supported; use bind=True and plain functions",
    "expires": "Gearman jobs do not expire; cancel queued ones with revoke()",
    "reject_on_worker_lost": "a job whose worker dies is always requeued by gearmand "
    "(GEARATTACH['MAX_ATTEMPTS'] bounds it)",
    "store_errors_even_if_ignored": "every failure is recorded",
    "trail": "results do not keep children",
    "shadow": "a job's name is its Gearman function name",
    "compression": "arguments and results are always JSON",
    "stale_while_revalidate": "an AsyncResult has no stale state to answer with while a "
    "refresh runs; use django_gearattach's submit() with KeyPolicy.stale(), or "
    "@offload(stale_while_revalidate=...) for a page",
}


def _refuse(decorator: str, option: str, value: Any = None) -> NotImplementedError:
    reason = UNSUPPORTED_TASK_OPTIONS.get(option, "this Celery option has no Gearman equivalent")
    return NotImplementedError(f"{decorator}({option}=...) is not supported: {reason}.")


class CeleryTask(Generic[P, R]):
    """A task made by :func:`shared_task` or ``@app.task``."""

    def __init__(
        self,
        func: Callable[..., R],
        name: str,
        bind: bool,
        options: Mapping[str, Any],
        app: Any = None,
    ) -> None:
        self.run = func
        self.name = name
        self.bind = bind
        self.app = app
        values: dict[str, Any] = {**TASK_OPTIONS, **options}
        get = values.__getitem__
        self.ignore_result: bool | None = get("ignore_result")
        self.track_started: bool | None = get("track_started")
        self.max_retries: int | None = get("max_retries")
        self.default_retry_delay: float = get("default_retry_delay")
        self.autoretry_for: tuple[type[BaseException], ...] = tuple(get("autoretry_for"))
        self.dont_autoretry_for: tuple[type[BaseException], ...] = tuple(get("dont_autoretry_for"))
        self.retry_kwargs: dict[str, Any] = dict(get("retry_kwargs"))
        self.retry_backoff: bool | float = get("retry_backoff")
        self.retry_backoff_max: float = get("retry_backoff_max")
        self.retry_jitter: bool = get("retry_jitter")
        self.priority: int | str | None = get("priority")
        self.serializer: str = get("serializer")
        self.acks_late: bool = get("acks_late")
        self.typing: bool = get("typing")
        self.time_limit: float | None = get("time_limit")
        self.soft_time_limit: float | None = get("soft_time_limit")
        self.rate_limit: str | float | None = get("rate_limit")
        self.on_conflict: str | None = get("on_conflict")
        self.max_age: float | None = get("max_age")
        functools.update_wrapper(self, func)

        @functools.wraps(func)
        def execute(context: JobContext, *args: Any, **kwargs: Any) -> Any:
            return self._execute(context, list(args), kwargs)

        execute.celery_task = self  # type: ignore[attr-defined]
        # Registered under the task's name, so gearworker runs it like any @task.
        self.gearman_task = register_task(
            name=name,
            bind=True,
            time_limit=self.time_limit,
            soft_time_limit=self.soft_time_limit,
            rate_limit=self.rate_limit,
            on_conflict=self.on_conflict,
            max_age=self.max_age,
        )(execute)
        # Time limits apply to the user's function only, not to the shim's bookkeeping
        # after it (signals, the chain's next link): see execution.run_task.
        self.gearman_task.marks_own_body = True

    def __repr__(self) -> str:
        return f"<@task: {self.name}>"

    # -- settings that fall back to the app's configuration -----------------------------
    def _app_conf(self, name: str, default: Any) -> Any:
        from .config import configuration

        return configuration(name, default)

    @property
    def tracks_started(self) -> bool:
        if self.track_started is not None:
            return bool(self.track_started)
        return bool(self._app_conf("task_track_started", False))

    @property
    def ignores_result(self) -> bool:
        if self.ignore_result is not None:
            return bool(self.ignore_result)
        return bool(self._app_conf("task_ignore_result", False))

    def _execute(self, context: JobContext | None, args: list[Any], kwargs: dict[str, Any]) -> Any:
        from .execution import run_task

        return run_task(self, context, args, kwargs)

    def __call__(self, *args: Any, **kwargs: Any) -> R:
        """Run the task here and now, as calling a Celery task does."""
        return self._execute(None, list(args), kwargs)  # type: ignore[no-any-return]

    # -- submitting ---------------------------------------------------------------------
    def delay(self, *args: Any, **kwargs: Any) -> AsyncResult:
        """Submit the task as a background job: ``apply_async(args, kwargs)``."""
        return self.apply_async(args, kwargs)

    def apply_async(
        self,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        task_id: str | None = None,
        **options: Any,
    ) -> AsyncResult:
        """Submit the task. ``task_id`` becomes the job key: submitting an id whose job
        is queued or running joins it, and one whose job finished returns its stored
        outcome (task ids are idempotent here). ``countdown``/``eta`` schedule it
        (SUBMIT_JOB_EPOCH); ``priority`` 0-2 is Gearman's low, 3-6 normal, 7 and above
        high (or "low", "normal", "high"); ``ignore_result``; ``link`` (a signature
        run with the result, as a chain); ``on_conflict`` and ``max_age`` (with a
        ``task_id``: the key policy of :mod:`django_gearattach.policies`, as the
        task options of the same names). Any other option raises
        :exc:`NotImplementedError` naming it.
        """
        from .canvas import submit_signature

        return submit_signature(self.name, args or (), kwargs or {}, task_id, options)

    def delay_on_commit(self, *args: Any, **kwargs: Any) -> None:
        """``delay()`` when the current transaction commits (Celery's DjangoTask)."""
        from django.db import transaction

        transaction.on_commit(functools.partial(self.delay, *args, **kwargs))

    def apply_async_on_commit(self, *args: Any, **kwargs: Any) -> None:
        """``apply_async()`` when the current transaction commits (Celery's DjangoTask)."""
        from django.db import transaction

        transaction.on_commit(functools.partial(self.apply_async, *args, **kwargs))

    def AsyncResult(self, task_id: str, **kwargs: Any) -> AsyncResult:
        from .result import AsyncResult

        return AsyncResult(task_id, task_name=self.name, **kwargs)

    def s(self, *args: Any, **kwargs: Any) -> Signature:
        """A signature with partial arguments (``add.s(2)``)."""
        from .canvas import Signature

        return Signature(self.name, args, kwargs)

    def si(self, *args: Any, **kwargs: Any) -> Signature:
        """An immutable signature: a chain does not pass it the previous result."""
        from .canvas import Signature

        return Signature(self.name, args, kwargs, immutable=True)

    def signature(
        self,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> Signature:
        from .canvas import Signature

        immutable = bool(options.pop("immutable", False))
        return Signature(self.name, args or (), kwargs or {}, options, immutable=immutable)

    subtask = signature

    def retry(self, *args: Any, **kwargs: Any) -> Retry:
        """``task.retry(...)`` on the task object, from inside its own run."""
        bound = current_bound()
        if bound is None or bound._task is not self:
            raise RuntimeError(f"{self.name}.retry() can only be called while it runs")
        return bound.retry(*args, **kwargs)

    def update_state(self, *args: Any, **kwargs: Any) -> None:
        bound = current_bound()
        if bound is None or bound._task is not self:
            return
        bound.update_state(*args, **kwargs)

    @property
    def request(self) -> Request:
        bound = current_bound()
        if bound is not None and bound._task is self:
            return bound.request
        return Request(task=self.name)

    def apply(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(
            'apply() is not supported; set GEARATTACH["IMMEDIATE"] = True in tests instead'
        )

    def map(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError("task.map() is not supported; use group(task.s(x) for x in ...)")

    starmap = chunks = map


def lookup(name: str) -> CeleryTask[Any, Any] | None:
    """The Celery task registered under ``name`` in this process, if any."""
    registered = registered_tasks().get(name)
    if registered is None:
        return None
    task = getattr(registered.func, "celery_task", None)
    return task if isinstance(task, CeleryTask) else None


def make_decorator(
    decorator: str, app: Any, name: str | None, bind: bool, options: Mapping[str, Any]
) -> Callable[[Callable[..., R]], CeleryTask[Any, R]]:
    """Validate the options of ``@shared_task(...)``/``@app.task(...)`` and build tasks."""
    for option, value in options.items():
        if option not in TASK_OPTIONS:
            raise _refuse(decorator, option, value)
    if options.get("serializer", "json") != "json":
        raise NotImplementedError(
            f"{decorator}(serializer={options['serializer']!r}) is not supported: "
            "arguments and results are always JSON"
        )
    if options.get("acks_late", True) is not True:
        raise NotImplementedError(
            f"{decorator}(acks_late=False) is not supported: gearmand requeues a job whose "
            "worker dies before it reports, which is acks_late=True"
        )

    def decorate(f: Callable[..., R]) -> CeleryTask[Any, R]:
        task_name = name or f"{f.__module__}.{f.__name__}"
        return CeleryTask(f, task_name, bind, options, app)

    return decorate
