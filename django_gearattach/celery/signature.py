"""Signatures (``task.s()``, ``.si()``, ``signature()``) and the one submit path of
every ``apply_async``: options checked, ``countdown``/``eta`` scheduled, publish
signals sent, the job submitted under the task id.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from ..payload import new_key
from . import signals

if TYPE_CHECKING:
    from .canvas import chain
    from .result import AsyncResult


#: ``apply_async``/``.set()`` options honoured, besides args, kwargs and task_id.
APPLY_OPTIONS = frozenset(
    {"countdown", "eta", "priority", "ignore_result", "link", "on_conflict", "max_age"}
)
#: The options of a task id's key policy (:mod:`django_gearattach.policies`).
POLICY_OPTIONS = ("on_conflict", "max_age")

_UNSUPPORTED_APPLY = {
    "expires": "Gearman jobs do not expire; cancel queued jobs with revoke() instead",
    "queue": "Gearman has no named queues: jobs are routed by task name, so start "
    "`manage.py gearworker --function NAME` on the workers that should run them",
    "routing_key": "Gearman routes jobs by task name and key, not by routing keys",
    "exchange": "Gearman has no exchanges",
    "link_error": "there are no error callbacks; connect to the task_failure signal",
    "retry": "submission fails over between the configured servers on its own",
    "retry_policy": "submission fails over between the configured servers on its own",
    "soft_time_limit": "time limits are per task: @app.task(soft_time_limit=...)",
    "time_limit": "time limits are per task: @app.task(time_limit=...)",
    "shadow": "a job's name is its Gearman function name",
    "headers": "Gearman jobs carry only JSON arguments",
    "serializer": "arguments and results are always JSON",
    "compression": "arguments and results are always JSON",
    "add_to_parent": "results do not keep children",
    "stale_while_revalidate": "an AsyncResult has no stale state to answer with while a "
    "refresh runs; use django_gearattach's submit() with KeyPolicy.stale(), or "
    "@offload(stale_while_revalidate=...) for a page",
}


def unsupported(option: str) -> NotImplementedError:
    reason = _UNSUPPORTED_APPLY.get(option, "this Celery option has no Gearman equivalent")
    return NotImplementedError(f"apply_async({option}=...) is not supported: {reason}.")


def gearman_priority(priority: int | str | None) -> str | None:
    """Celery's 0 (lowest) to 9 (highest, AMQP style) as Gearman's low/normal/high."""
    if priority is None or isinstance(priority, str):
        return priority
    if not isinstance(priority, int) or not 0 <= priority <= 255:
        raise ValueError(f"priority must be an integer from 0 to 255, got {priority!r}")
    return "low" if priority <= 2 else "normal" if priority <= 6 else "high"


def _check_options(options: Mapping[str, Any]) -> None:
    for option, value in options.items():
        if option == "serializer" and value == "json":
            continue
        if option not in APPLY_OPTIONS:
            raise unsupported(option)


def submit_signature(
    name: str,
    args: Sequence[Any],
    kwargs: Mapping[str, Any],
    task_id: str | None,
    options: Mapping[str, Any],
    meta: Mapping[str, Any] | None = None,
) -> AsyncResult:
    """Submit one task as a job (the common path of every apply_async)."""
    from ..submission import submit
    from .request import META
    from .result import AsyncResult

    _check_options(options)
    meta = dict(meta or {})
    if options.get("ignore_result"):
        meta["ignore_result"] = True
    link = options.get("link")
    if link is not None:
        links = list(link) if isinstance(link, (list, tuple)) else [link]
        if len(links) != 1 or not isinstance(links[0], Signature):
            raise NotImplementedError(
                "apply_async(link=...) takes one signature here (it runs as the next link "
                "of a chain); for several, use a chain"
            )
        meta["chain"] = [links[0].frozen(), *meta.get("chain", [])]
    countdown, eta = options.get("countdown"), options.get("eta")
    if countdown is not None and eta is not None:
        raise ValueError("give countdown or eta, not both")
    if isinstance(eta, str):
        eta = datetime.fromisoformat(eta)
    submit_kwargs = {**kwargs, META: meta} if meta else dict(kwargs)
    policy = {name: options[name] for name in POLICY_OPTIONS if options.get(name) is not None}
    if policy and task_id is None:
        raise ValueError(
            f"apply_async({', '.join(f'{n}=...' for n in policy)}) needs task_id=: a key "
            "policy applies to a task id that several calls share (a random one is nobody "
            "else's)"
        )
    key = task_id or new_key()
    headers = {"id": key, "task": name, "retries": meta.get("retries", 0), "eta": eta}
    body: tuple[list[Any], dict[str, Any], dict[str, Any]] = (list(args), dict(kwargs), {})
    signals.before_task_publish.send(
        sender=name,
        body=body,
        exchange=None,
        routing_key=None,
        headers=headers,
        properties={},
        declare=[],
        retry_policy=None,
    )
    job = submit(
        name,
        args,
        submit_kwargs,
        key=key,
        priority=gearman_priority(options.get("priority")),
        run_at=eta,
        delay=countdown,
        **policy,
    )
    signals.after_task_publish.send(
        sender=name, body=body, exchange=None, routing_key=None, headers=headers
    )
    return AsyncResult(job.key, task_name=name)


class Signature(dict[str, Any]):
    """A task call to be made later: name, partial args and kwargs, options.

    A dict (JSON-ready), as Celery's signatures are; ``add.s(2, 3)``,
    ``add.si(2, 3)``, ``signature("proj.add", args=(2, 3))``.
    """

    def __init__(
        self,
        task: Any,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        options: Mapping[str, Any] | None = None,
        immutable: bool = False,
        **extra: Any,
    ) -> None:
        if extra:
            raise NotImplementedError(
                f"signature({', '.join(extra)}=...) is not supported: a signature has a task, "
                "args, kwargs, options and immutable"
            )
        if isinstance(task, dict):
            super().__init__(task)
            return
        name = task if isinstance(task, str) else getattr(task, "name", None)
        if not isinstance(name, str):
            raise TypeError(f"signature() needs a task or a task name, got {task!r}")
        options = dict(options or {})
        _check_options({k: v for k, v in options.items() if k != "task_id"})
        super().__init__(
            task=name,
            args=list(args),
            kwargs=dict(kwargs or {}),
            options=options,
            immutable=immutable,
        )

    @property
    def name(self) -> str:
        return str(self["task"])

    @property
    def args(self) -> list[Any]:
        return list(self["args"])

    @property
    def kwargs(self) -> dict[str, Any]:
        return dict(self["kwargs"])

    @property
    def options(self) -> dict[str, Any]:
        return dict(self["options"])

    @property
    def immutable(self) -> bool:
        return bool(self["immutable"])

    @property
    def id(self) -> str | None:
        value = self["options"].get("task_id")
        return None if value is None else str(value)

    def __repr__(self) -> str:
        args = ", ".join(
            [repr(a) for a in self.args] + [f"{k}={v!r}" for k, v in self.kwargs.items()]
        )
        return f"{self.name}({args}){'!' if self.immutable else ''}"

    def clone(
        self,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        **opts: Any,
    ) -> Signature:
        """A copy with ``args`` prepended (unless immutable) and kwargs and options merged."""
        new_args = self.args if self.immutable else [*(args or ()), *self.args]
        return Signature(
            self.name,
            new_args,
            {**self.kwargs, **(kwargs or {})},
            {**self.options, **opts},
            immutable=self.immutable,
        )

    def set(self, immutable: bool | None = None, **options: Any) -> Signature:
        _check_options({k: v for k, v in options.items() if k != "task_id"})
        if immutable is not None:
            self["immutable"] = immutable
        self["options"] = {**self.options, **options}
        return self

    def frozen(self) -> Signature:
        """This signature with its id fixed (a fresh key unless it has one)."""
        if self.id is None:
            self["options"] = {**self.options, "task_id": new_key()}
        return self

    freeze = frozen

    def apply_async(
        self,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> AsyncResult:
        call = self.clone(args, kwargs, **options)
        opts = call.options
        task_id = opts.pop("task_id", None)
        return submit_signature(call.name, call.args, call.kwargs, task_id, opts)

    def delay(self, *args: Any, **kwargs: Any) -> AsyncResult:
        return self.apply_async(args, kwargs)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Run the task here and now (it must be registered in this process)."""
        from .task import lookup

        task = lookup(self.name)
        if task is None:
            from .exceptions import NotRegistered

            raise NotRegistered(self.name)
        call = self.clone(args, kwargs)
        return task(*call.args, **call.kwargs)

    def __or__(self, other: Any) -> chain:  # type: ignore[override]
        from .canvas import chain

        if isinstance(other, (Signature, chain)):
            return chain(self, other)
        return NotImplemented

    def link(self, callback: Signature) -> Signature:
        self["options"] = {**self.options, "link": callback}
        return callback


signature = Signature
subtask = Signature


def maybe_signature(value: Any) -> Signature:
    if isinstance(value, Signature):
        return value
    if isinstance(value, dict):
        return Signature(value)
    raise NotImplementedError(
        f"{value!r} is not a signature: a canvas here is made of task signatures "
        "(task.s(...)); nested groups and chords are not supported"
    )
