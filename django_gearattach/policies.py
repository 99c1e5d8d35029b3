"""Key policies: what a submit of a key does when the key has a record already.

A policy is set per task (``@task(on_conflict=..., max_age=...,
stale_while_revalidate=...)``) and overridden per submit (``submit(...)`` takes the
same keywords) or per view (``@offload(...)``). It makes two choices.

``on_conflict``, a submit while the key's run is queued or running:

* ``"join"`` (the default): the submit joins that run; nothing new runs.
* ``"follow_up"``: while the run is *running*, the submit asks for one follow-up run,
  which starts when this one ends; every other submit during the run folds into it
  (the first one's arguments run). While the run waits, the submit joins it: it has
  not read its data yet.
* ``"replace"`` (latest wins): while the run is running, the submit cancels it, by
  :func:`~django_gearattach.cancelling.request_cancel` (the path
  :func:`~django_gearattach.operations.cancel` takes), and its own run starts once the
  cancelled one has ended; the cancelled run's attachers follow the new one. While
  the run waits, the submit's arguments replace the run's own (nothing had started).

``max_age`` (seconds), a submit of a finished key: its stored outcome answers for that
long after the run ended. None means forever (until ``rerun=True``), the default under
"join"; under "follow_up" and "replace" the default is 0 (a submit after the end runs
again). A finite ``max_age`` keeps complete outcomes only: a failure runs again.

``stale_while_revalidate`` (seconds): past ``max_age``, for this long still, a submit
starts one refresh run and its caller may answer with the stored outcome meanwhile
(:meth:`KeyPolicy.stale`); ``@offload`` serves the stored page, marked "updating".

:mod:`~django_gearattach.runs` carries a policy out on the record, each step one
conditional UPDATE, so that it holds across processes and hosts. This module imports
no models: ``@task`` options are checked when a task module is imported.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from .exceptions import GearattachError

if TYPE_CHECKING:
    from .models import Job

__all__ = [
    "DEFAULT",
    "InvalidPolicy",
    "KeyPolicy",
    "OnConflict",
    "RunReason",
    "StoredOutcome",
]

#: The record's status of a complete run (``models.Status.COMPLETE``; this module is
#: imported before the models are).
COMPLETE = "complete"


class OnConflict(models.TextChoices):
    """What a submit of a key does while the key's run is queued or running (see
    :mod:`~django_gearattach.policies`)."""

    JOIN = "join", _("Join the run")
    FOLLOW_UP = "follow_up", _("One follow-up run")
    REPLACE = "replace", _("Latest wins")


class RunReason(models.TextChoices):
    """Why the key's current run started."""

    SUBMIT = "submit", _("First submit")
    RERUN = "rerun", _("Rerun asked for")
    EXPIRED = "expired", _("Stored outcome too old")
    REFRESH = "refresh", _("Stale outcome refreshed")
    FOLLOW_UP = "follow_up", _("Follow-up")
    REPLACE = "replace", _("Replaced the run before")


class InvalidPolicy(GearattachError, ValueError):
    """A key policy option that names no policy (a typo, a negative age...)."""


def _seconds(name: str, value: Any, *, none_ok: bool) -> float | None:
    if value is None and none_ok:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        allowed = "a number of seconds (0 or more) or None" if none_ok else "seconds, 0 or more"
        raise InvalidPolicy(f"{name} must be {allowed}, not {value!r}")
    return float(value)


def on_conflict_of(value: Any) -> OnConflict:
    try:
        return OnConflict(value)
    except ValueError:
        names = ", ".join(repr(c.value) for c in OnConflict)
        raise InvalidPolicy(f"on_conflict must be one of {names}, not {value!r}") from None


@dataclass(frozen=True, slots=True)
class StoredOutcome:
    """A complete run's result that may still answer while its key refreshes."""

    result: Any
    finished_at: datetime

    def age(self, now: datetime | None = None) -> float:
        return ((now or timezone.now()) - self.finished_at).total_seconds()


@dataclass(frozen=True, slots=True)
class KeyPolicy:
    """What a submit of a key does with the key's record (see the module docstring)."""

    on_conflict: OnConflict = OnConflict.JOIN
    max_age: float | None = None
    stale_while_revalidate: float = 0.0

    @classmethod
    def of(
        cls,
        on_conflict: str | None = None,
        max_age: float | None = None,
        stale_while_revalidate: float | None = None,
    ) -> KeyPolicy:
        """A validated policy; raises :class:`InvalidPolicy` for a bad option."""
        return cls().overridden(on_conflict, max_age, stale_while_revalidate)

    def overridden(
        self,
        on_conflict: str | None = None,
        max_age: float | None = None,
        stale_while_revalidate: float | None = None,
    ) -> KeyPolicy:
        """This policy with the options given (None: keep this one's). ``max_age``
        ``math.inf`` means forever."""
        policy = self
        if on_conflict is not None:
            policy = replace(policy, on_conflict=on_conflict_of(on_conflict))
        if max_age is not None:
            age = _seconds("max_age", max_age, none_ok=False)
            policy = replace(policy, max_age=None if age == math.inf else age)
        if stale_while_revalidate is not None:
            stale = _seconds("stale_while_revalidate", stale_while_revalidate, none_ok=False)
            policy = replace(policy, stale_while_revalidate=stale or 0.0)
        if policy.stale_while_revalidate and policy.reuse_for == math.inf:
            raise InvalidPolicy(
                "stale_while_revalidate needs a max_age: an outcome kept forever never "
                "goes stale (say max_age=600, stale_while_revalidate=60)"
            )
        if policy.stale_while_revalidate == math.inf:
            raise InvalidPolicy("stale_while_revalidate must be a finite number of seconds")
        return policy

    @property
    def is_default(self) -> bool:
        return self == DEFAULT

    @property
    def reuse_for(self) -> float:
        """Seconds a finished run's outcome answers a submit (``inf``: forever)."""
        if self.max_age is not None:
            return self.max_age
        return math.inf if self.on_conflict == OnConflict.JOIN else 0.0

    def fresh(self, job: Job, now: datetime) -> bool:
        """Whether the finished ``job``'s stored outcome answers a submit at ``now``."""
        limit = self.reuse_for
        if limit == math.inf:
            return True
        if job.status != COMPLETE or job.finished_at is None:
            return False
        return (now - job.finished_at).total_seconds() <= limit

    def stale(self, job: Job, now: datetime | None = None) -> StoredOutcome | None:
        """The stored outcome a caller may answer with while ``job``'s key refreshes.

        The last complete run's result (the record's own, or the one kept from before
        its current run), if it ended at most ``max_age + stale_while_revalidate``
        seconds ago; None otherwise, or without ``stale_while_revalidate``.
        """
        if not self.stale_while_revalidate:
            return None
        if job.status == COMPLETE and job.finished_at is not None:
            stored = StoredOutcome(job.result, job.finished_at)
        elif job.previous_finished_at is not None:
            stored = StoredOutcome(job.previous_result, job.previous_finished_at)
        else:
            return None
        if stored.age(now) > self.reuse_for + self.stale_while_revalidate:
            return None
        return stored


#: Join, and keep outcomes forever: a key's meaning when nothing else is asked for.
DEFAULT = KeyPolicy()
