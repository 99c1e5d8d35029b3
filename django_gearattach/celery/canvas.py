"""Signatures and the canvas (``.s()``, ``.si()``, ``chain``, ``group``, ``chord``) on jobs.

Every task of a canvas gets its id (job key) when the canvas is applied, as Celery
freezes ids. A chain submits its first task, with the rest of the chain in that job's
bookkeeping; the worker that runs a link submits the next link with its result, so
nothing polls. (The next link is submitted when the task has returned, just
before its outcome is committed, so that anyone who sees a link's outcome finds the
next link's record.) A group submits its tasks at once. A chord submits its header as a
group whose jobs all know the header's ids and the body: each header job, once its
outcome is committed, checks whether the whole header succeeded, and if so submits
the body under its frozen id. Two header jobs finishing together may both submit it;
the key makes that one job (the record and gearmand coalesce it).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from ..payload import new_key
from . import signals

if TYPE_CHECKING:
    from .result import AsyncResult, GroupResult

#: ``apply_async``/``.set()`` options honoured, besides args, kwargs and task_id.
APPLY_OPTIONS = frozenset({"countdown", "eta", "priority", "ignore_result", "link"})

_UNSUPPORTED_APPLY = {
    "expires": "Gearman jobs do not expire; cancel queued jobs with revoke() instead",
    "queue": "Gearman has no named queues: jobs are routed by task name, so start "
    "`manage.py gearworker --function NAME` on the workers that should run them",
    "routing_key": "Gearman routes jobs by task name and key, not by routing keys",
    "exchange": "Gearman has no exchanges",
    "link_error": "there are no error callbacks; connect to the task_failure signal",
    "retry": "submission fails over between the configured servers on its own",
    "retry_policy": "submission fails over between the configured servers on its own",
    "soft_time_limit": "Gearman has no time limits; enforce them inside the task",
    "time_limit": "Gearman has no time limits; enforce them inside the task",
    "shadow": "a job's name is its Gearman function name",
    "headers": "Gearman jobs carry only JSON arguments",
    "serializer": "arguments and results are always JSON",
    "compression": "arguments and results are always JSON",
    "add_to_parent": "results do not keep children",
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
    from .result import AsyncResult
    from .task import META

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


class chain:
    """Tasks run one after the other, each given the previous result (unless ``.si()``)."""

    def __init__(self, *tasks: Any) -> None:
        if len(tasks) == 1 and not isinstance(tasks[0], (Signature, chain)):
            tasks = tuple(tasks[0])  # chain(generator) / chain([...])
        links: list[Signature] = []
        for task in tasks:
            if isinstance(task, chain):
                links.extend(task.tasks)
            elif isinstance(task, (group, chord)):
                raise NotImplementedError(
                    "a group or chord inside a chain is not supported; apply the chain and "
                    "the group separately, or use chord(header, body)"
                )
            else:
                links.append(maybe_signature(task))
        if not links:
            raise ValueError("chain() needs at least one task")
        self.tasks: list[Signature] = links

    def __repr__(self) -> str:
        return " | ".join(map(repr, self.tasks))

    def __or__(self, other: Any) -> chain:
        if isinstance(other, (Signature, chain)):
            return chain(self, other)
        return NotImplemented

    def apply_async(
        self,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        **opts: Any,
    ) -> AsyncResult:
        """Submit the first task; return the last task's result (``.parent`` links back)."""
        from .result import AsyncResult

        first = self.tasks[0].clone(args, kwargs, **opts).frozen()
        rest = [link.clone().frozen() for link in self.tasks[1:]]
        first_options = first.options
        task_id = first_options.pop("task_id")
        meta = {"chain": rest} if rest else None
        result = submit_signature(
            first.name, first.args, first.kwargs, task_id, first_options, meta
        )
        for link in rest:
            result = AsyncResult(link.id or "", task_name=link.name, parent=result)
        return result

    def delay(self, *args: Any, **kwargs: Any) -> AsyncResult:
        return self.apply_async(args, kwargs)

    def __call__(self, *args: Any, **kwargs: Any) -> AsyncResult:
        return self.apply_async(args, kwargs)


class group:
    """Tasks run in parallel; ``apply_async()`` returns a :class:`GroupResult`."""

    def __init__(self, *tasks: Any) -> None:
        if len(tasks) == 1 and not isinstance(tasks[0], Signature):
            tasks = tuple(tasks[0])  # group(generator) / group([...])
        self.tasks = [maybe_signature(t) for t in tasks]

    def __repr__(self) -> str:
        return f"group({self.tasks!r})"

    def __len__(self) -> int:
        return len(self.tasks)

    def __or__(self, other: Any) -> chord:
        if isinstance(other, Signature):
            return chord(self, other)
        raise NotImplementedError(
            "group | ... is supported only with one signature after it (a chord)"
        )

    def _submit(
        self, args: Sequence[Any] | None, kwargs: Mapping[str, Any] | None, meta: dict[str, Any]
    ) -> GroupResult:
        from .result import GroupResult

        group_id = new_key()
        calls = [t.clone(args, kwargs).frozen() for t in self.tasks]
        if "chord" in meta:
            meta["chord"]["header"] = [[c.name, c.id] for c in calls]
        results = []
        for call in calls:
            options = call.options
            task_id = options.pop("task_id")
            results.append(
                submit_signature(
                    call.name,
                    call.args,
                    call.kwargs,
                    task_id,
                    options,
                    {**meta, "group": group_id},
                )
            )
        return GroupResult(group_id, results)

    def apply_async(
        self,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        **opts: Any,
    ) -> GroupResult:
        if opts:
            raise NotImplementedError(
                f"group.apply_async({', '.join(opts)}=...) is not supported: set options on "
                "each signature"
            )
        return self._submit(args, kwargs, {})

    def delay(self, *args: Any, **kwargs: Any) -> GroupResult:
        return self.apply_async(args, kwargs)

    def __call__(self, *args: Any, **kwargs: Any) -> GroupResult:
        return self.apply_async(args, kwargs)


class chord:
    """A group (the header) whose results, in order, are passed to one task (the body)."""

    def __init__(self, header: Any, body: Any = None, **options: Any) -> None:
        if options:
            raise NotImplementedError(
                f"chord({', '.join(options)}=...) is not supported: a chord takes a header "
                "and a body"
            )
        self.header = header if isinstance(header, group) else group(header)
        self.body = maybe_signature(body) if body is not None else None

    def __call__(self, body: Any = None, **options: Any) -> AsyncResult:
        if body is not None:
            return chord(self.header, body).apply_async(**options)
        return self.apply_async(**options)

    def apply_async(
        self,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        **opts: Any,
    ) -> AsyncResult:
        from .result import AsyncResult

        if self.body is None:
            raise TypeError("chord(header)(body): the body is missing")
        if opts:
            raise NotImplementedError(
                f"chord.apply_async({', '.join(opts)}=...) is not supported: set options on "
                "each signature"
            )
        body = self.body.clone().frozen()
        if not self.header.tasks:
            return body.apply_async(([],))
        parent = self.header._submit(args, kwargs, {"chord": {"body": body}})
        return AsyncResult(body.id or "", task_name=body.name, parent=parent)

    def delay(self, *args: Any, **kwargs: Any) -> AsyncResult:
        return self.apply_async(args, kwargs)


def continue_chain(links: Sequence[Any], result: Any) -> None:
    """Submit a chain's next link with ``result``, carrying the links after it.

    Runs in the worker when a link's task has returned, before its outcome is
    recorded: anyone who sees the outcome finds the next link's record. If the outcome
    cannot be recorded the job runs again and submits the same link again, under the
    same frozen id, which joins (or returns) the first one.
    """
    rest = [maybe_signature(link) for link in links]
    following = rest[0].clone([result])
    options = following.options
    task_id = options.pop("task_id", None)
    submit_signature(
        following.name,
        following.args,
        following.kwargs,
        task_id,
        options,
        {"chain": rest[1:]} if rest[1:] else None,
    )


def header_done(chord_meta: dict[str, Any], status: str, result: Any) -> None:
    """Runs in the worker once a chord header job's outcome is committed."""
    if status == "complete":
        _maybe_run_chord_body(chord_meta)


def _maybe_run_chord_body(chord_meta: Mapping[str, Any]) -> None:
    from ..models import Job, Status

    header = [(str(name), str(key)) for name, key in chord_meta["header"]]
    from ..records import load

    records = load(header)
    if any(r is None or r.status != Status.COMPLETE for r in records):
        return  # not all done yet (the last one to finish submits the body), or one failed
    results = [r.result for r in records if isinstance(r, Job)]
    body = maybe_signature(chord_meta["body"]).clone([results])
    options = body.options
    task_id = options.pop("task_id", None)
    submit_signature(body.name, body.args, body.kwargs, task_id, options)
