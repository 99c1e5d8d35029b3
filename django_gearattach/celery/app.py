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

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, TypeVar, overload

from .config import Configuration, apps, register_check
from .task import CeleryTask, make_decorator

if TYPE_CHECKING:
    from .result import AsyncResult
    from .result import AsyncResult as _AsyncResult

R = TypeVar("R")


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
        apps.append(self)
        register_check()

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

        from django.apps import apps as django_apps
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
                    found = django_apps.get_app_config(package.rpartition(".")[2]).module
                except LookupError:
                    found = None
                base = found if found is not None else import_module(package)
                if module_has_submodule(base, related_name):
                    import_module(f"{base.__name__}.{related_name}")


def discover() -> None:
    """Import what every app's ``autodiscover_tasks()`` asked for, and apps' tasks modules."""
    from django.utils.module_loading import autodiscover_modules

    autodiscover_modules("tasks")
    for app in list(apps):
        app._discover_now()


app = Celery("django_gearattach")
apps.remove(app)  # the ready-made app has no configuration of its own


class _CurrentApp:
    """``current_app``: the project's app (the first ``Celery(...)`` made), as a proxy."""

    def _get(self) -> Celery:
        found: Celery = apps[0] if apps else app
        return found

    def __getattr__(self, name: str) -> Any:
        return getattr(self._get(), name)

    def __repr__(self) -> str:
        return f"<current_app: {self._get()!r}>"


current_app = _CurrentApp()
