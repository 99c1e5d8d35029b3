"""Key policies for Django Tasks run by the Gearman backend.

A Django task has no key: ``enqueue()`` takes no id, and every result gets a new one.
The backend's ``OPTIONS`` may give a task a key made of some of its arguments, with
the policy for it (:mod:`django_gearattach.policies`)::

    TASKS = {
        "default": {
            "BACKEND": "django_gearattach.tasks_backend.GearmanBackend",
            "OPTIONS": {
                "KEY_POLICIES": {
                    "shop.tasks.rebuild_index": {
                        "key": ["tenant_id"],
                        "on_conflict": "follow_up",
                    },
                },
            },
        }
    }

``rebuild_index.enqueue(tenant_id=7)`` then runs under the key of tenant 7: while a
rebuild of tenant 7 runs, more enqueues ask for one follow-up; each returns a
``TaskResult`` whose id is that key (the same id, which ``get_result()`` follows to the
key's latest run). ``max_age`` and ``on_conflict`` map; ``stale_while_revalidate``
does not (a ``TaskResult`` has one status, its current run's, and nothing stale to
hand out meanwhile) and is refused, as is anything else, when the task is defined.
The key is a keyed hash of the task's path and the arguments' values, so a result id
cannot be worked out from them by someone without ``SECRET_KEY``.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from django.core.exceptions import ImproperlyConfigured

from ..policies import InvalidPolicy, KeyPolicy
from ..sealing import keyed_hash

SETTING = "KEY_POLICIES"
_ALLOWED = {"key", "on_conflict", "max_age"}
_REFUSED = {
    "stale_while_revalidate": "a TaskResult has one status, its current run's, and no stale "
    "result to hand out while a refresh runs; use django_gearattach's submit() with "
    "KeyPolicy.stale(), or @offload(stale_while_revalidate=...) for a page"
}


@dataclass(frozen=True)
class TaskKeyPolicy:
    """A task's key (the names of the arguments it is made of) and its policy."""

    arguments: tuple[str, ...]
    policy: KeyPolicy

    def key_for(self, task: Any, args: Sequence[Any], kwargs: Mapping[str, Any]) -> str:
        """The key of an enqueue of ``task`` with ``args`` and ``kwargs``."""
        bound = _signature(task).bind(*_with_context(task, args), **kwargs)
        bound.apply_defaults()
        values = [bound.arguments[name] for name in self.arguments]
        text = json.dumps([task.module_path, values], sort_keys=True, default=str)
        return f"task-{keyed_hash('tasks-key', text)[:40]}"

    def submit_options(self) -> dict[str, Any]:
        return {"on_conflict": self.policy.on_conflict, "max_age": self.policy.max_age}


def key_policy(options: Mapping[str, Any], task: Any) -> TaskKeyPolicy | None:
    """``OPTIONS["KEY_POLICIES"][task.module_path]``, checked; None when it has none.

    Raises ImproperlyConfigured for an option that does not map or is misspelt, a key
    that names no argument of the task, or a bad policy value.
    """
    configured = options.get(SETTING, {})
    where = f"TASKS OPTIONS[{SETTING!r}]"
    if not isinstance(configured, Mapping):
        raise ImproperlyConfigured(
            f"{where} must map task module paths to {{'key': [argument names], ...}}"
        )
    entry = configured.get(task.module_path)
    if entry is None:
        return None
    where = f"{where}[{task.module_path!r}]"
    if not isinstance(entry, Mapping):
        raise ImproperlyConfigured(f"{where} must be a dict: {{'key': [argument names], ...}}")
    for name in entry:
        if name in _REFUSED:
            raise ImproperlyConfigured(f"{where}: {name} is not supported: {_REFUSED[name]}")
        if name not in _ALLOWED:
            raise ImproperlyConfigured(
                f"{where}: unknown option {name!r}; use key, on_conflict and max_age"
            )
    names = entry.get("key")
    if isinstance(names, str):
        names = [names]
    parameters = list(_signature(task).parameters)[1 if task.takes_context else 0 :]
    if not names or not all(isinstance(n, str) and n in parameters for n in names):
        raise ImproperlyConfigured(
            f"{where}: 'key' must name the arguments the key is made of, among "
            f"{', '.join(parameters) or 'none'}; got {names!r}"
        )
    try:
        policy = KeyPolicy.of(entry.get("on_conflict"), entry.get("max_age"))
    except InvalidPolicy as exc:
        raise ImproperlyConfigured(f"{where}: {exc}") from None
    return TaskKeyPolicy(tuple(names), policy)


def _signature(task: Any) -> inspect.Signature:
    return inspect.signature(task.func)


def _with_context(task: Any, args: Sequence[Any]) -> list[Any]:
    return [None, *args] if task.takes_context else list(args)
