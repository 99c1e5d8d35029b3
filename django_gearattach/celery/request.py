"""What a running Celery task sees: ``self`` (:class:`BoundTask`) and ``self.request``."""

from __future__ import annotations

import contextvars
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from . import states
from .exceptions import MaxRetriesExceededError, Retry

if TYPE_CHECKING:
    from ..tasks import JobContext
    from .task import CeleryTask

#: The reserved keyword argument that carries Celery's per-run bookkeeping.
META = "__celery__"

_current: contextvars.ContextVar[BoundTask | None] = contextvars.ContextVar(
    "gearattach_celery_task", default=None
)


def current_bound() -> BoundTask | None:
    """The task running in this thread (``current_task``), or None."""
    return _current.get()


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
