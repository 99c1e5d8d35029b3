"""Celery tasks as Gearman jobs: ``@shared_task``/``@app.task``, ``self.request``,
``self.retry()``, autoretry, ``track_started``, ``ignore_result``, signals.

A task is registered with this app under its Celery name, so ``gearworker`` runs it.
Celery's per-run bookkeeping (the retry count, the rest of a chain, a chord's body)
travels with the job's own arguments, in the reserved keyword argument
``__celery__``, which the worker removes before calling the function: it is in the
record, so a revived or retried job keeps it, and nothing else needs storing.

Importing this module touches no model and no setting.
"""

from __future__ import annotations

import functools
import random
import traceback as tb
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, TypeVar

from ..tasks import JobContext, Rescheduled, registered_tasks
from ..tasks import task as register_task
from . import signals, states
from .exceptions import MaxRetriesExceededError, Retry

if TYPE_CHECKING:
    from .canvas import Signature
    from .result import AsyncResult

P = ParamSpec("P")
R = TypeVar("R")

#: The reserved keyword argument that carries Celery's per-run bookkeeping.
META = "__celery__"

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
}

#: Why the other task options are refused, named in the error.
UNSUPPORTED_TASK_OPTIONS = {
    "rate_limit": "Gearman has no rate limits; run fewer workers for the task "
    "(gearworker --function NAME --concurrency N)",
    "time_limit": "Gearman has no time limits; enforce them inside the task",
    "soft_time_limit": "Gearman has no time limits; enforce them inside the task",
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
}


def _refuse(decorator: str, option: str, value: Any = None) -> NotImplementedError:
    reason = UNSUPPORTED_TASK_OPTIONS.get(option, "this Celery option has no Gearman equivalent")
    return NotImplementedError(f"{decorator}({option}=...) is not supported: {reason}.")


def backoff_interval(factor: float, retries: int, maximum: float, full_jitter: bool) -> float:
    """Celery's exponential backoff: ``factor * 2**retries`` capped, with full jitter."""
    countdown = float(min(maximum, factor * (2**retries)))
    if full_jitter:
        countdown = float(random.randrange(int(countdown) + 1))
    return max(0.0, countdown)


@dataclass
class Request:
    """``self.request`` in a bound task (the fields Celery code reads most)."""

    id: str | None = None
    task: str = ""
    args: list[Any] = field(default_factory=list)
    kwargs: dict[str, Any] = field(default_factory=dict)
    retries: int = 0
    hostname: str | None = None
    called_directly: bool = True
    is_eager: bool = False
    eta: str | None = None
    parent_id: str | None = None
    root_id: str | None = None
    group: str | None = None
    chain: list[dict[str, Any]] | None = None
    ignore_result: bool = False
    delivery_info: dict[str, Any] = field(default_factory=dict)


def current_bound() -> BoundTask | None:
    from .app import _current

    return _current.get()


class BoundTask:
    """What a bound task receives as ``self``: the task, plus this run's request."""

    def __init__(
        self,
        task: CeleryTask[Any, Any],
        context: JobContext | None,
        request: Request,
        meta: dict[str, Any],
    ) -> None:
        self._task = task
        self._context = context
        self.request = request
        self._meta = meta

    def __getattr__(self, name: str) -> Any:
        return getattr(self._task, name)

    def __repr__(self) -> str:
        return f"<bound task {self._task.name}[{self.request.id}]>"

    def update_state(
        self,
        task_id: str | None = None,
        state: str | None = None,
        meta: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        """Report a state: ``meta["current"]``/``meta["total"]`` become WORK_STATUS and
        the record's progress; state and meta become the job's data (WORK_DATA), which
        ``AsyncResult.state``/``.info`` read back and ``get(on_message=...)`` receives.
        Outside a worker it does nothing, as calling a Celery task directly stores
        nothing.
        """
        if kwargs:
            raise NotImplementedError(
                f"update_state({', '.join(kwargs)}=...) is not supported: the state and "
                "meta are the job's data"
            )
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

    def retry(
        self,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        exc: BaseException | None = None,
        throw: bool = True,
        eta: datetime | None = None,
        countdown: float | None = None,
        max_retries: int | None = None,
        **options: Any,
    ) -> Retry:
        """Run the task again later, as Celery's ``Task.retry``; raises :class:`Retry`.

        The job keeps its id (key): its record goes back to ``scheduled`` (or
        ``queued``) with ``retries`` counted, and it runs after ``countdown`` seconds
        (or at ``eta``; default ``default_retry_delay``). After ``max_retries`` retries
        (the task's, unless given here; None: no limit) ``exc`` is raised, or
        :class:`MaxRetriesExceededError` without one.
        """
        if options:
            raise NotImplementedError(
                f"retry({', '.join(options)}=...) is not supported: a retry takes args, "
                "kwargs, exc, countdown, eta and max_retries"
            )
        if not throw:
            raise NotImplementedError(
                "retry(throw=False) is not supported: the retry ends this run, so return "
                "after calling retry()"
            )
        request = self.request
        if request.called_directly:
            # Celery re-raises the exception of a task called directly.
            if exc is not None:
                raise exc
            raise MaxRetriesExceededError(
                f"{self._task.name} was called directly and cannot be retried"
            )
        limit = self._task.max_retries if max_retries is None else max_retries
        if limit is not None and request.retries >= limit:
            if exc is not None:
                raise exc
            raise MaxRetriesExceededError(
                f"Can't retry {self._task.name}[{request.id}] args:{request.args} "
                f"kwargs:{request.kwargs}",
                task_args=request.args,
                task_kwargs=request.kwargs,
            )
        if eta is None:
            delay = self._task.default_retry_delay if countdown is None else countdown
            when: float | datetime = float(delay)
        else:
            when = eta
        retry = Retry(exc=exc, when=when)
        retry.next_args = list(request.args if args is None else args)  # type: ignore[attr-defined]
        retry.next_kwargs = dict(request.kwargs if kwargs is None else kwargs)  # type: ignore[attr-defined]
        raise retry


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
        functools.update_wrapper(self, func)

        @functools.wraps(func)
        def execute(context: JobContext, *args: Any, **kwargs: Any) -> Any:
            return self._execute(context, list(args), kwargs)

        execute.celery_task = self  # type: ignore[attr-defined]
        # Registered under the task's name, so gearworker runs it like any @task.
        self.gearman_task = register_task(name=name, bind=True)(execute)

    def __repr__(self) -> str:
        return f"<@task: {self.name}>"

    # -- settings that fall back to the app's configuration -----------------------------
    def _app_conf(self, name: str, default: Any) -> Any:
        from .app import configuration

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

    # -- running ------------------------------------------------------------------------
    def _execute(self, context: JobContext | None, args: list[Any], kwargs: dict[str, Any]) -> Any:
        from .app import _current

        meta = kwargs.pop(META, None) or {}
        if not isinstance(meta, dict):
            raise TypeError(f"the {META} keyword argument is reserved for the Celery shim")
        request = Request(
            task=self.name,
            args=args,
            kwargs=kwargs,
            retries=int(meta.get("retries", 0)),
            chain=meta.get("chain"),
            group=meta.get("group"),
            ignore_result=bool(meta.get("ignore_result", self.ignores_result)),
        )
        if context is not None:
            request.id, request.called_directly = context.key, False
        bound = BoundTask(self, context, request, meta)
        token = _current.set(bound)
        if context is not None:
            signals.task_prerun.send(
                sender=self, task_id=request.id, task=self, args=args, kwargs=kwargs
            )
        try:
            try:
                if self.bind:
                    value = self.run(bound, *args, **kwargs)
                else:
                    value = self.run(*args, **kwargs)
            except Retry:
                raise
            except self.autoretry_for as exc:
                if self.dont_autoretry_for and isinstance(exc, self.dont_autoretry_for):
                    raise
                bound.retry(exc=exc, **self._autoretry_options(request))
                raise  # pragma: no cover - retry() always raises
        except Retry as retry:
            _current.reset(token)
            if context is None:
                raise
            self._after_retry(context, request, retry, meta)
            raise AssertionError("unreachable") from retry  # pragma: no cover
        except Exception as exc:
            _current.reset(token)
            if context is not None:
                signals.task_failure.send(
                    sender=self,
                    task_id=request.id,
                    exception=exc,
                    args=args,
                    kwargs=kwargs,
                    traceback=exc.__traceback__,
                    einfo=tb.format_exc(),
                )
                signals.task_postrun.send(
                    sender=self,
                    task_id=request.id,
                    task=self,
                    args=args,
                    kwargs=kwargs,
                    retval=exc,
                    state=states.FAILURE,
                )
            raise
        _current.reset(token)
        if context is None:
            return value
        signals.task_success.send(sender=self, result=value)
        signals.task_postrun.send(
            sender=self,
            task_id=request.id,
            task=self,
            args=args,
            kwargs=kwargs,
            retval=value,
            state=states.SUCCESS,
        )
        if meta.get("chain"):
            from .canvas import continue_chain

            # Before the worker records this outcome: whoever sees it finds the next link.
            continue_chain(meta["chain"], value)
        if meta.get("chord"):
            from .canvas import header_done

            context.on_outcome(functools.partial(header_done, meta["chord"]))
        return None if request.ignore_result else value

    def _autoretry_options(self, request: Request) -> dict[str, Any]:
        options = dict(self.retry_kwargs)
        if self.retry_backoff:
            options["countdown"] = backoff_interval(
                factor=max(1.0, float(self.retry_backoff)),
                retries=request.retries,
                maximum=float(self.retry_backoff_max),
                full_jitter=bool(self.retry_jitter),
            )
        return options

    def _after_retry(
        self, context: JobContext, request: Request, retry: Retry, meta: dict[str, Any]
    ) -> None:
        from django.utils import timezone

        from ..retrying import reschedule

        when = retry.when
        run_at = (
            when if isinstance(when, datetime) else timezone.now() + timedelta(seconds=when or 0)
        )
        next_meta = {**meta, "retries": request.retries + 1}
        kwargs = {**getattr(retry, "next_kwargs", request.kwargs), META: next_meta}
        reason = f"retry {request.retries + 1}"
        if retry.exc is not None:
            reason += f" after {type(retry.exc).__name__}: {retry.exc}"
        resend = reschedule(
            self.name,
            context.key,
            getattr(retry, "next_args", request.args),
            kwargs,
            run_at,
            reason,
        )
        signals.task_retry.send(
            sender=self, request=request, reason=retry.exc or retry, einfo=None
        )
        raise Rescheduled(resend, reason)

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
        run with the result, as a chain). Any other option raises
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
