"""The Celery shim's configuration: ``app.conf``, read lazily, and its system check.

``config_from_object("django.conf:settings", namespace="CELERY")`` only records where
the values live; each is read when asked for, so ``override_settings`` works and
nothing touches settings at import time. Keys outside the honoured subset are
reported by ``manage.py check`` (``gearattach.W101``) instead of being silently
ignored; Celery's transport settings are replaced by ``GEARATTACH`` and not reported.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

#: Every Celery app made in this process (a project normally has one).
apps: list[Any] = []

#: Configuration keys honoured, with Celery's defaults.
HONOURED: dict[str, Any] = {
    "task_track_started": False,
    "task_ignore_result": False,
    "beat_schedule": {},
    "timezone": None,
}

#: Keys that configure Celery's transport or workers; Gearman's equivalents are
#: GEARATTACH and gearworker's options, so they are accepted and have no effect.
TRANSPORT = (
    "broker_",
    "result_",
    "accept_content",
    "task_serializer",
    "event_serializer",
    "cache_backend",
    "enable_utc",
    "worker_",
    "imports",
    "include",
    "task_default_queue",
    "beat_scheduler",
    "beat_max_loop_interval",
    "security_",
    "redis_",
    "database_",
)

#: Behaviour this shim cannot provide: ``manage.py check`` warns about each one set.
REFUSED = {
    "task_always_eager": 'use GEARATTACH["IMMEDIATE"] = True (see the testing docs)',
    "task_eager_propagates": 'GEARATTACH["IMMEDIATE"] always propagates',
    "task_time_limit": "set GEARATTACH['TIME_LIMIT'] (or @app.task(time_limit=...)) instead",
    "task_soft_time_limit": "set GEARATTACH['SOFT_TIME_LIMIT'] (or "
    "@app.task(soft_time_limit=...)) instead",
    "task_annotations": "set options on each @shared_task instead",
    "task_routes": "Gearman routes by task name: start gearworker --function NAME",
    "task_queues": "Gearman has no named queues",
    "task_default_rate_limit": "rate limits are per task: @app.task(rate_limit=...)",
    "task_acks_late": "a job whose worker dies is always requeued (acks_late=True)",
    "task_reject_on_worker_lost": "a job whose worker dies is always requeued",
    "task_create_missing_queues": "Gearman has no named queues",
    "task_compression": "arguments and results are always JSON",
    "task_publish_retry": "submission fails over between the configured servers",
    "task_publish_retry_policy": "submission fails over between the configured servers",
}


class Configuration:
    """``app.conf``: explicit values first, then the configured object, then defaults."""

    def __init__(self) -> None:
        self._values: dict[str, Any] = {}
        self._source: Any = None
        self._namespace: str | None = None

    def _load_source(self) -> Any:
        source = self._source
        if source == "django.conf:settings" or source == "django.conf.settings":
            from django.conf import settings

            return settings
        if isinstance(source, str):
            from django.utils.module_loading import import_string

            return import_string(source.replace(":", "."))
        return source

    def _from_source(self, key: str) -> Any:
        if self._source is None:
            raise KeyError(key)
        source = self._load_source()
        name = f"{self._namespace}_{key.upper()}" if self._namespace else key
        if isinstance(source, Mapping):
            if name in source:
                return source[name]
            raise KeyError(key)
        if hasattr(source, name):
            return getattr(source, name)
        raise KeyError(key)

    def get(self, key: str, default: Any = None) -> Any:
        if key in self._values:
            return self._values[key]
        try:
            return self._from_source(key)
        except KeyError:
            return HONOURED.get(key, default)

    def __getattr__(self, key: str) -> Any:
        if key.startswith("_"):
            raise AttributeError(key)
        return self.get(key)

    def __setattr__(self, key: str, value: Any) -> None:
        if key.startswith("_"):
            super().__setattr__(key, value)
        else:
            self._values[key] = value

    def __getitem__(self, key: str) -> Any:
        return self.get(key)

    def __setitem__(self, key: str, value: Any) -> None:
        self._values[key] = value

    def update(self, values: Mapping[str, Any] | None = None, **kwargs: Any) -> None:
        self._values.update(values or {}, **kwargs)

    def configured_keys(self) -> list[str]:
        """Every key set explicitly or in the configured object (for the system check)."""
        keys = set(self._values)
        if self._source is not None:
            source = self._load_source()
            names = source.keys() if isinstance(source, Mapping) else dir(source)
            prefix = f"{self._namespace}_" if self._namespace else ""
            for name in names:
                if prefix and name.startswith(prefix):
                    keys.add(name[len(prefix) :].lower())
                elif not prefix and name.islower() and not name.startswith("_"):
                    keys.add(name)
        return sorted(keys)


def configuration(key: str, default: Any = None) -> Any:
    """A configuration value: the first app that sets it, else ``CELERY_<KEY>``, else default."""
    for app in apps:
        if key in app.conf._values:
            return app.conf._values[key]
        try:
            return app.conf._from_source(key)
        except KeyError:
            continue
    from django.conf import settings

    name = f"CELERY_{key.upper()}"
    if hasattr(settings, name):
        return getattr(settings, name)
    return HONOURED.get(key, default)


_checked = False


def register_check() -> None:
    global _checked
    if _checked:
        return
    _checked = True
    from django.core import checks

    checks.register(check_configuration)


def check_configuration(**kwargs: Any) -> list[Any]:
    """``manage.py check``: warn about each Celery setting this shim does not honour."""
    from django.core import checks

    messages = []
    seen = set()
    for app in apps:
        for key in app.conf.configured_keys():
            if key in seen or key in HONOURED or key.startswith(TRANSPORT):
                continue
            seen.add(key)
            reason = REFUSED.get(key, "this Celery setting has no Gearman equivalent")
            messages.append(
                checks.Warning(
                    f"Celery setting {key!r} is not supported by django_gearattach.celery "
                    "and has no effect.",
                    hint=reason,
                    obj=app,
                    id="gearattach.W101",
                )
            )
    return messages
