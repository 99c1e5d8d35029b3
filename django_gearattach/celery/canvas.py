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

A chord's metadata (the header's ids and the body) is signed with ``SECRET_KEY`` when
the chord is applied: a header job reads its siblings' results and passes them to the
body, so a job that anyone on gearmand's network could submit with metadata of their
own must not (:func:`verified_chord`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from django.core import signing

from ..exceptions import BadPayload
from ..payload import new_key, to_json_value
from .signature import Signature, maybe_signature, signature, submit_signature, subtask

if TYPE_CHECKING:
    from .result import AsyncResult, GroupResult

__all__ = [
    "Signature",
    "chain",
    "chord",
    "group",
    "maybe_signature",
    "signature",
    "submit_signature",
    "subtask",
]


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
            meta["chord"]["signature"] = _sign(meta["chord"])
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


CHORD_SALT = "django_gearattach.celery.chord"


def _canonical(chord_meta: Mapping[str, Any]) -> str:
    header, body = to_json_value([chord_meta.get("header"), chord_meta.get("body")])
    return json.dumps([header, body], sort_keys=True, separators=(",", ":"))


def _sign(chord_meta: Mapping[str, Any]) -> str:
    return signing.Signer(salt=CHORD_SALT).signature(_canonical(chord_meta))


def verified_chord(chord_meta: Any, key: str) -> dict[str, Any]:
    """A header job's chord metadata, if this site signed it and the job is in its header.

    Else :class:`~django_gearattach.exceptions.BadPayload`: the job came from someone
    else on gearmand's network, and running it would hand other jobs' results to a body
    of their choosing.
    """
    signer = signing.Signer(salt=CHORD_SALT)
    signature = chord_meta.get("signature") if isinstance(chord_meta, dict) else None
    try:
        if not isinstance(signature, str):
            raise signing.BadSignature("no signature")
        signer.unsign(f"{_canonical(chord_meta)}{signer.sep}{signature}")
        header = [list(map(str, member)) for member in chord_meta["header"]]
    except (signing.BadSignature, TypeError, ValueError, KeyError):
        raise BadPayload(
            "the chord metadata of this job is not signed with this site's SECRET_KEY (or a "
            "key in SECRET_KEY_FALLBACKS): only chords applied by this site run"
        ) from None
    if not any(sibling_key == key for _, sibling_key in header):
        raise BadPayload("this job is not in the header of the chord its metadata names")
    return dict(chord_meta)


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
