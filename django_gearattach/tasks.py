"""The ``@task`` decorator, the task registry and the context a running task reports to."""

from __future__ import annotations

import contextvars
import difflib
import functools
import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, Protocol, TypeVar, overload

from .exceptions import JobCancelled, UnknownTask
from .policies import DEFAULT, InvalidPolicy, KeyPolicy
from .ratelimits import checked_concurrency, parse_rate
from .timelimits import TimeLimits, run_body

if TYPE_CHECKING:
    from .models import Job

P = ParamSpec("P")
R = TypeVar("R")

_registry: dict[str, Task[Any, Any]] = {}


class Reporter(Protocol):
    """Where a running task's reports go (the worker, or a test double of it)."""

    def progress(self, numerator: int, denominator: int) -> None: ...
    def data(self, value: Any) -> None: ...
    def warning(self, message: str) -> None: ...
    def stream(self, chunk: Any) -> None: ...


class RunClaim(Protocol):
    """The claim of the run a task is in, on its job's record (the worker's
    :class:`~django_gearattach.worker.claim.Claim`): writes go through it."""

    @property
    def held(self) -> bool: ...
    def requeue(self, status: Any, **fields: Any) -> bool: ...


class Rescheduled(Exception):
    """Raised out of a task that recorded its own next run (the Celery shim's retries).

    The worker ends this run in gearmand without recording an outcome, then calls
    ``resend(server)`` with the server the run came from, which submits the next run
    once gearmand has forgotten this one.
    """

    def __init__(self, resend: Callable[[Any], None], reason: str = "") -> None:
        super().__init__(reason or "the task asked to run again")
        self.resend = resend


OutcomeCallback = Callable[[str, Any], None]


class JobContext:
    """Handed to ``bind=True`` tasks and returned by :func:`current_job` inside a task."""

    def __init__(
        self, function: str, key: str, reporter: Reporter, claim: RunClaim | None = None
    ) -> None:
        self.function = function
        self.key = key
        self._reporter = reporter
        #: The run's claim on the record (None outside a worker): a retry goes through it.
        self.claim = claim
        self.outcome_callbacks: list[OutcomeCallback] = []
        #: Set by the worker's watchdog when someone cancels the running job.
        self.cancel_requested = False

    @property
    def cancelled(self) -> bool:
        """Whether the job was cancelled while it ran: stop, clean up, and raise."""
        return self.cancel_requested

    def _check_cancelled(self) -> None:
        if self.cancel_requested:
            raise JobCancelled(f"job {self.function}[{self.key}] was cancelled")

    def on_outcome(self, callback: OutcomeCallback) -> None:
        """Call ``callback(status, result)`` once the job's outcome is committed.

        The worker calls it after the record says complete or failed and before
        gearmand (and so any attacher) hears of it: a chain submits its next link
        here. An exception in it is logged, not raised.
        """
        self.outcome_callbacks.append(callback)

    def progress(self, numerator: int, denominator: int) -> None:
        """Report progress: sent to attached clients (WORK_STATUS) and kept in the record.

        Raises :class:`~django_gearattach.exceptions.JobCancelled` once the job is cancelled.
        """
        self._check_cancelled()
        self._reporter.progress(int(numerator), int(denominator))

    def data(self, value: Any) -> None:
        """Send intermediate JSON data to attached clients (WORK_DATA).

        Raises :class:`~django_gearattach.exceptions.JobCancelled` once the job is cancelled.
        """
        self._check_cancelled()
        self._reporter.data(value)

    def warning(self, message: str) -> None:
        """Send a warning to attached clients (WORK_WARNING)."""
        self._reporter.warning(str(message))

    def stream(self, chunk: Any) -> None:
        """Append ``chunk`` (a str or any JSON value) to the job's stream.

        Every attacher receives it at once, in order; it is kept with the record (written
        in batches) for attachers that join later (``attach(..., after=...)``, a reload).
        Raises :class:`~django_gearattach.exceptions.JobCancelled` once the job is
        cancelled, and :class:`~django_gearattach.exceptions.BadPayload` for a value that
        is not JSON. See :mod:`django_gearattach.streams`.
        """
        self._check_cancelled()
        self._reporter.stream(chunk)

    async def astream(self, chunk: Any) -> None:
        """:meth:`stream` from an ``async def`` task (its first chunk reads the record).

        On the worker's event loop the chunk leaves from the loop, in order with the
        chunks of :meth:`stream`; the record is read and written by threads.
        """
        self._check_cancelled()
        astream = getattr(self._reporter, "astream", None)
        if astream is not None:
            await astream(chunk)
            return
        from asgiref.sync import sync_to_async

        await sync_to_async(self._reporter.stream)(chunk)


_current: contextvars.ContextVar[JobContext | None] = contextvars.ContextVar(
    "gearattach_job", default=None
)


def current_job() -> JobContext | None:
    """The context of the task running in this thread, or None outside a task."""
    return _current.get()


class Task(Generic[P, R]):
    """A function registered under a Gearman function name."""

    def __init__(
        self,
        func: Callable[..., R],
        name: str,
        priority: str | None,
        bind: bool,
        time_limits: TimeLimits | None = None,
        rate_limit: float | None = None,
        concurrency: int | None = None,
        policy: KeyPolicy = DEFAULT,
    ) -> None:
        self.func = func
        self.name = name
        self.priority = priority
        self.bind = bind
        #: Seconds the task may run (the settings' defaults apply where these are None).
        self.time_limits = time_limits or TimeLimits()
        #: Starts per second allowed over all workers (None: no limit), and jobs
        #: running at once over all workers (see :mod:`django_gearattach.ratelimits`).
        self.rate_limit = rate_limit
        self.concurrency = concurrency
        #: What a submit with a key does when the key has a record (see
        #: :mod:`django_gearattach.policies`).
        self.policy = policy
        #: Whether ``func`` marks its own body for the time limits (the Celery shim, whose
        #: bookkeeping after the user's function must not be interrupted); else all of
        #: ``func`` is the body (see :func:`~django_gearattach.timelimits.run_body`).
        self.marks_own_body = False
        functools.update_wrapper(self, func)

    def __repr__(self) -> str:
        return f"<Task {self.name}>"

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Call the function directly, in this process (no Gearman involved)."""
        if self.bind:
            return self.func(current_job(), *args, **kwargs)
        return self.func(*args, **kwargs)

    @property
    def is_async(self) -> bool:
        """Whether the function is a coroutine function (``async def``): workers run it
        on their event loop, many at once (:mod:`~django_gearattach.worker.asyncrunner`)."""
        return inspect.iscoroutinefunction(self.func)

    async def arun(self, context: JobContext, args: list[Any], kwargs: dict[str, Any]) -> Any:
        """Await an ``async def`` task's body (in its own asyncio task, whose context
        :func:`current_job` reads)."""
        _current.set(context)
        if self.bind:
            args = [context, *args]
        return await self.func(*args, **kwargs)  # type: ignore[misc]

    def run(self, context: JobContext, args: list[Any], kwargs: dict[str, Any]) -> R:
        if self.is_async:
            # Run where no event loop of the worker's is (immediate mode): to the end here.
            from asgiref.sync import async_to_sync

            return async_to_sync(self.arun)(context, args, kwargs)  # type: ignore[no-any-return]
        token = _current.set(context)
        try:
            if self.bind:
                args = [context, *args]
            if self.marks_own_body:
                return self.func(*args, **kwargs)
            return run_body(self.func, *args, **kwargs)
        finally:
            _current.reset(token)

    def submit(self, *args: P.args, **kwargs: P.kwargs) -> Job:
        """Submit as a background job with a random key; return its record."""
        from .submission import submit

        return submit(self, args=args, kwargs=kwargs)

    async def asubmit(self, *args: P.args, **kwargs: P.kwargs) -> Job:
        from .submission import asubmit

        return await asubmit(self, args=args, kwargs=kwargs)


@overload
def task(func: Callable[P, R], /) -> Task[P, R]: ...
@overload
def task(
    *,
    name: str | None = None,
    priority: str | None = None,
    bind: bool = False,
    time_limit: float | None = None,
    soft_time_limit: float | None = None,
    rate_limit: str | float | None = None,
    concurrency: int | None = None,
    on_conflict: str | None = None,
    max_age: float | None = None,
    stale_while_revalidate: float | None = None,
) -> Callable[[Callable[..., R]], Task[Any, R]]: ...


def task(
    func: Callable[..., R] | None = None,
    /,
    *,
    name: str | None = None,
    priority: str | None = None,
    bind: bool = False,
    time_limit: float | None = None,
    soft_time_limit: float | None = None,
    rate_limit: str | float | None = None,
    concurrency: int | None = None,
    on_conflict: str | None = None,
    max_age: float | None = None,
    stale_while_revalidate: float | None = None,
) -> Task[Any, R] | Callable[[Callable[..., R]], Task[Any, R]]:
    """Register a function as a task.

    The Gearman function name defaults to ``"module.qualname"``; ``name=`` overrides
    it (``@task(name="example.slow")``). With ``bind=True`` the function receives a
    :class:`JobContext` as its first argument. ``soft_time_limit`` and ``time_limit``
    (seconds) bound a run: see :mod:`django_gearattach.timelimits`. ``rate_limit``
    (``"10/m"``) and ``concurrency`` (N) hold over all workers: see
    :mod:`django_gearattach.ratelimits`.

    The key policy says what a submit with a key does when the key has a record:
    ``on_conflict`` (``"join"``, the default; ``"follow_up"``; ``"replace"``, latest
    wins), ``max_age`` (seconds a stored outcome answers; None: forever) and
    ``stale_while_revalidate`` (seconds past that it still answers while one refresh
    runs): see :mod:`django_gearattach.policies`. A submit may override each.
    """
    limits = TimeLimits.of(soft_time_limit, time_limit)
    rate = parse_rate(rate_limit)
    most = checked_concurrency(concurrency)
    policy = DEFAULT.overridden(on_conflict, max_age, stale_while_revalidate)

    def register(f: Callable[..., R]) -> Task[Any, R]:
        task_name = name or f"{f.__module__}.{f.__qualname__}"
        existing = _registry.get(task_name)
        if (
            existing is not None
            and existing.func is not f
            and _origin(existing.func) != _origin(f)
        ):
            raise ValueError(
                f"two tasks are registered as {task_name!r}: {_origin(existing.func)} and "
                f"{_origin(f)}; give one of them another name="
            )
        registered: Task[Any, R] = Task(f, task_name, priority, bind, limits, rate, most, policy)
        _registry[task_name] = registered
        return registered

    return register(func) if func is not None else register


def _origin(func: Callable[..., Any]) -> str:
    return f"{func.__module__}.{func.__qualname__}"


def get_task(name: str) -> Task[Any, Any]:
    try:
        return _registry[name]
    except KeyError:
        raise UnknownTask(
            f"no task is registered as {name!r}; is its module imported? Tasks in an app's "
            "tasks.py are found automatically."
        ) from None


def close_matches(name: str) -> list[str]:
    """Registered task names that look like ``name`` (a typo's likely intent)."""
    return difflib.get_close_matches(name, list(_registry), n=3, cutoff=0.6)


def unknown_task_message(name: str) -> str:
    """Why ``name`` is not a task here, naming close matches."""
    matches = close_matches(name)
    if matches:
        hint = f"Did you mean {' or '.join(repr(m) for m in matches)}?"
    elif _registry:
        names = sorted(_registry)
        more = f" and {len(names) - 10} more" if len(names) > 10 else ""
        hint = f"Registered tasks: {', '.join(names[:10])}{more}."
    else:
        hint = "No task is registered: decorate functions with @task in an app's tasks.py."
    return f"no installed app registers a task named {name!r}. {hint}"


def registered_tasks() -> dict[str, Task[Any, Any]]:
    return dict(_registry)


def function_name(task_or_name: Task[Any, Any] | str) -> str:
    return task_or_name if isinstance(task_or_name, str) else task_or_name.name


_discovered = False


def find_task(name: str) -> Task[Any, Any] | None:
    """The task registered as ``name``; the first name this process does not know
    imports the installed apps' ``tasks`` modules first, as ``gearworker`` does (a task
    defined in an app's tasks module that nothing in this process has imported yet)."""
    global _discovered
    if name not in _registry and not _discovered:
        from django.utils.module_loading import autodiscover_modules

        _discovered = True
        autodiscover_modules("tasks")
    return _registry.get(name)


def tasks_discovered() -> bool:
    """Whether :func:`find_task` has imported the installed apps' ``tasks`` modules."""
    return _discovered


def policy_of(
    task_or_name: Task[Any, Any] | str,
    key: str | None,
    on_conflict: str | None = None,
    max_age: float | None = None,
    stale_while_revalidate: float | None = None,
) -> KeyPolicy:
    """The key policy of a submit: the task's (``@task(on_conflict=...)``, also for a
    task named by a string: see :func:`find_task`), with the submit's options.
    Raises :class:`~django_gearattach.policies.InvalidPolicy` for a bad option, and
    for options without a key (a random key is nobody else's)."""
    if key is None and (on_conflict, max_age, stale_while_revalidate) != (None, None, None):
        raise InvalidPolicy(
            "on_conflict, max_age and stale_while_revalidate apply to a key: pass key= (a "
            "submit without one gets a random key, which nothing else shares)"
        )
    task = task_or_name if isinstance(task_or_name, Task) else find_task(task_or_name)
    base = task.policy if task is not None else DEFAULT
    return base.overridden(on_conflict, max_age, stale_while_revalidate)
