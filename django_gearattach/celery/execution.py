"""Running a Celery task in the worker: signals, autoretry, retries, chains.

A retry records the job's next run (:mod:`django_gearattach.retrying`) and raises
:class:`~django_gearattach.tasks.Rescheduled`, which the worker turns into the end of
this run with no outcome recorded.
"""

from __future__ import annotations

import functools
import random
import traceback as tb
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from ..tasks import JobContext, Rescheduled
from ..timelimits import run_body
from . import signals, states
from .exceptions import Retry
from .request import META, BoundTask, Request, _current

if TYPE_CHECKING:
    from .task import CeleryTask


def backoff_interval(factor: float, retries: int, maximum: float, full_jitter: bool) -> float:
    """Celery's exponential backoff: ``factor * 2**retries`` capped, with full jitter."""
    countdown = float(min(maximum, factor * (2**retries)))
    if full_jitter:
        countdown = float(random.randrange(int(countdown) + 1))
    return max(0.0, countdown)


def run_task(
    self: CeleryTask[Any, Any], context: JobContext | None, args: list[Any], kwargs: dict[str, Any]
) -> Any:
    """Run ``self`` with Celery's semantics; ``context`` is None for a direct call."""
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
        if meta.get("chord") is not None:
            from .canvas import verified_chord

            meta = {**meta, "chord": verified_chord(meta["chord"], context.key)}
    bound = BoundTask(self, context, request, meta)
    token = _current.set(bound)
    if context is not None:
        signals.task_prerun.send(
            sender=self, task_id=request.id, task=self, args=args, kwargs=kwargs
        )
    try:
        try:
            call_args = [bound, *args] if self.bind else args
            value = run_body(self.run, *call_args, **kwargs)
        except Retry:
            raise
        except self.autoretry_for as exc:
            if self.dont_autoretry_for and isinstance(exc, self.dont_autoretry_for):
                raise
            bound.retry(exc=exc, **_autoretry_options(self, request))
            raise  # pragma: no cover - retry() always raises
    except Retry as retry:
        _current.reset(token)
        if context is None:
            raise
        _after_retry(self, context, request, retry, meta)
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


def _autoretry_options(self: CeleryTask[Any, Any], request: Request) -> dict[str, Any]:
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
    self: CeleryTask[Any, Any],
    context: JobContext,
    request: Request,
    retry: Retry,
    meta: dict[str, Any],
) -> None:
    from django.utils import timezone

    from ..retrying import reschedule

    when = retry.when
    run_at = when if isinstance(when, datetime) else timezone.now() + timedelta(seconds=when or 0)
    next_meta = {**meta, "retries": request.retries + 1}
    kwargs = {**getattr(retry, "next_kwargs", request.kwargs), META: next_meta}
    reason = f"retry {request.retries + 1}"
    if retry.exc is not None:
        reason += f" after {type(retry.exc).__name__}: {retry.exc}"
    resend = reschedule(
        context,
        getattr(retry, "next_args", request.args),
        kwargs,
        run_at,
        reason,
    )
    signals.task_retry.send(sender=self, request=request, reason=retry.exc or retry, einfo=None)
    raise Rescheduled(resend, reason)
