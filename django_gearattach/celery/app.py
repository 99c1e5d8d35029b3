"""The ``Celery`` app object, its lazy configuration and task discovery.

As in Celery, nothing here runs at import or construction time:
``config_from_object("django.conf:settings", namespace="CELERY")`` records where the
configuration lives and ``autodiscover_tasks()`` records what to import; settings
are read when a value is asked for, and tasks modules are imported when something
needs the tasks (``gearworker``, ``gearbeat``, a bare ``AsyncResult(id)``). So the
standard ``proj/celery.py`` imported from ``proj/__init__.py`` loads before Django's
app registry is ready.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar, overload

from .task import CeleryTask, make_decorator

if TYPE_CHECKING:
    from .result import AsyncResult
    from .result import AsyncResult as _AsyncResult
    from .task import BoundTask

R = TypeVar("R")

_current: contextvars.ContextVar[BoundTask | None] = contextvars.ContextVar(
    "gearattach_celery_task", default=None
)

#: Every app made in this process (a project normally has one).
_apps: list[Celery] = []

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
    "task_time_limit": "Gearman has no time limits; enforce them inside the task",
    "task_soft_time_limit": "Gearman has no time limits; enforce them inside the task",
    "task_annotations": "set options on each @shared_task instead",
    "task_routes": "Gearman routes by task name: start gearworker --function NAME",
    "task_queues": "Gearman has no named queues",
    "task_default_rate_limit": "Gearman has no rate limits",
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


class Celery:
    """An app object for ``app = Celery("proj")`` and ``@app.task`` code."""

    def __init__(
        self,
        main: str | None = None,
        loader: Any = None,
        backend: Any = None,
        *,
        broker: Any = None,
        include: Iterable[str] | None = None,
        task_cls: Any = None,
        **kwargs: Any,
    ) -> None:
        if loader is not None:
            raise NotImplementedError(
                "Celery(loader=...) is not supported: Django loads the tasks"
            )
        if task_cls not in (None, "celery.contrib.django.task:DjangoTask"):
            raise NotImplementedError(
                "Celery(task_cls=...) is not supported: tasks are plain functions (with "
                "bind=True for self); delay_on_commit() is built in"
            )
        for option in kwargs:
            if option in ("set_as_current", "fixups", "config_source", "strict_typing"):
                continue
            raise NotImplementedError(
                f"Celery({option}=...) is not supported: configure the app with "
                "config_from_object() and GEARATTACH"
            )
        self.main = main
        self.conf = Configuration()
        self._include = list(include or [])
        self._discover: list[tuple[list[str] | Callable[[], list[str]] | None, str]] = []
        self._tasks: dict[str, CeleryTask[Any, Any]] = {}
        _apps.append(self)
        _register_check()

    def __repr__(self) -> str:
        return f"<Celery {self.main}>"

    @overload
    def task(self, func: Callable[..., R], /) -> CeleryTask[Any, R]: ...
    @overload
    def task(
        self, /, *, name: str | None = None, bind: bool = False, **options: Any
    ) -> Callable[[Callable[..., R]], CeleryTask[Any, R]]: ...

    def task(
        self,
        func: Callable[..., R] | None = None,
        /,
        *,
        name: str | None = None,
        bind: bool = False,
        **options: Any,
    ) -> CeleryTask[Any, R] | Callable[[Callable[..., R]], CeleryTask[Any, R]]:
        """``@app.task`` / ``@app.task(bind=True, name=..., ...)``: as ``shared_task``."""
        build = make_decorator("@app.task", self, name, bind, options)

        def decorate(f: Callable[..., R]) -> CeleryTask[Any, R]:
            created = build(f)
            self._tasks[created.name] = created
            return created

        return decorate(func) if func is not None else decorate

    @property
    def tasks(self) -> dict[str, CeleryTask[Any, Any]]:
        """The Celery tasks of this process, once the apps' tasks modules are imported."""
        from ..tasks import registered_tasks

        discover()
        found = {}
        for name, registered in registered_tasks().items():
            task = getattr(registered.func, "celery_task", None)
            if task is not None:
                found[name] = task
        return found

    def config_from_object(
        self, obj: Any, silent: bool = False, force: bool = False, namespace: str | None = None
    ) -> None:
        """Read the configuration from ``obj`` (lazily), with keys prefixed ``NAMESPACE_``."""
        self.conf._source = obj
        self.conf._namespace = namespace

    def autodiscover_tasks(
        self,
        packages: list[str] | Callable[[], list[str]] | None = None,
        related_name: str = "tasks",
        force: bool = False,
    ) -> None:
        """Remember to import each installed app's (or package's) ``tasks`` module.

        It happens when tasks are needed (``gearworker``, ``gearbeat``, a bare
        ``AsyncResult(id)``, ``app.tasks``), not now, as in Celery.
        """
        self._discover.append((packages, related_name))
        if force:
            discover()

    def AsyncResult(self, task_id: str, **kwargs: Any) -> AsyncResult:
        from .result import AsyncResult

        return AsyncResult(task_id, **kwargs)

    def GroupResult(self, *args: Any, **kwargs: Any) -> Any:
        from .result import GroupResult

        return GroupResult(*args, **kwargs)

    def send_task(
        self, name: str, args: Any = None, kwargs: Any = None, **options: Any
    ) -> _AsyncResult:
        """Submit a task by name (it need not be importable here)."""
        from .canvas import submit_signature

        task_id = options.pop("task_id", None)
        return submit_signature(name, args or (), kwargs or {}, task_id, options)

    def signature(self, *args: Any, **kwargs: Any) -> Any:
        from .canvas import Signature

        return Signature(*args, **kwargs)

    def _discover_now(self) -> None:
        from importlib import import_module

        from django.apps import apps
        from django.utils.module_loading import autodiscover_modules, module_has_submodule

        for module in self._include:
            import_module(module)
        for packages, related_name in self._discover:
            names = packages() if callable(packages) else packages
            if names is None:
                autodiscover_modules(related_name)
                continue
            for package in names:
                try:
                    found = apps.get_app_config(package.rpartition(".")[2]).module
                except LookupError:
                    found = None
                base = found if found is not None else import_module(package)
                if module_has_submodule(base, related_name):
                    import_module(f"{base.__name__}.{related_name}")


def discover() -> None:
    """Import what every app's ``autodiscover_tasks()`` asked for, and apps' tasks modules."""
    from django.utils.module_loading import autodiscover_modules

    autodiscover_modules("tasks")
    for app in list(_apps):
        app._discover_now()


def configuration(key: str, default: Any = None) -> Any:
    """A configuration value: the first app that sets it, else ``CELERY_<KEY>``, else default."""
    for app in _apps:
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


def _register_check() -> None:
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
    for app in _apps:
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


app = Celery("django_gearattach")
_apps.remove(app)  # the ready-made app has no configuration of its own


def current_app() -> Celery:
    return _apps[0] if _apps else app
