"""pytest fixtures for projects using django-gearattach: a real gearmand and real workers.

The plugin is registered when the package is installed (entry point ``pytest11``);
``-p django_gearattach.pytest_plugin`` (or ``pytest_plugins = [...]`` in a root
``conftest.py``) loads it explicitly. It needs pytest-django and gearmand
(``apt-get install gearman-job-server``); a missing gearmand fails the test with
install instructions, never a skip.

Fixtures (all function-scoped):

``gearattach_gearmand``
    A gearmand on a free loopback port, set as ``GEARATTACH["SERVERS"]`` for the test.
``gearattach_gearmand_factory``
    ``start(*extra_args)`` starts more gearmand servers (not configured).
``gearattach_worker``
    A ``gearworker`` process for every task, on ``gearattach_gearmand`` and the test
    database, registered before the test starts. Implies ``transactional_db``.
``gearattach_worker_factory``
    ``start(servers=None, *gearworker_args)`` starts more workers (``servers``: a list
    of gearmand fixtures; default, the configured one).
``gearattach_immediate``
    ``GEARATTACH["IMMEDIATE"] = True`` for the test: jobs run inside ``submit``.
``celery_worker``, ``celery_app``
    For test modules migrated from Celery (defined only when Celery itself is not
    installed, so that its own pytest plugin keeps its fixtures): a worker as
    ``gearattach_worker``, and :data:`django_gearattach.celery.app`.

The workers run ``python -m django_gearattach.testworker`` with this process's
``DJANGO_SETTINGS_MODULE`` and ``sys.path``; they use the test database, so it must
be a file or a server database (an in-memory SQLite test database cannot be shared).
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from importlib.util import find_spec
from typing import Any

import pytest

from . import Gearmand, WorkerProcess

REGISTER_TIMEOUT = 30.0


@pytest.fixture
def gearattach_gearmand_factory() -> Iterator[Callable[..., Gearmand]]:
    started: list[Gearmand] = []

    def start(*extra_args: str) -> Gearmand:
        server = Gearmand(extra_args=extra_args)
        started.append(server)
        return server.start()

    yield start
    for server in started:
        server.__exit__()


@pytest.fixture
def gearattach_gearmand(
    gearattach_gearmand_factory: Callable[..., Gearmand], settings: Any
) -> Gearmand:
    server = gearattach_gearmand_factory()
    current = getattr(settings, "GEARATTACH", None) or {}
    settings.GEARATTACH = {**current, "SERVERS": [server.address]}
    return server


def _test_databases() -> dict[str, str]:
    from django.db import connections

    names = {}
    for alias in connections:
        conn = connections[alias]
        name = str(conn.settings_dict["NAME"])
        if conn.vendor == "sqlite" and (name == ":memory:" or "mode=memory" in name):
            raise pytest.UsageError(
                f"database {alias!r} is an in-memory SQLite database, which a worker process "
                f"cannot share; give it a file: DATABASES[{alias!r}]['TEST'] = "
                "{'NAME': 'test-db.sqlite3'}"
            )
        names[alias] = name
    return names


def _worker_lines(address: str) -> int:
    from ..gearman.connection import admin_command
    from ..gearman.errors import GearmanError
    from ..gearman.rendezvous import Address

    try:
        lines = admin_command(Address.parse(address), "workers")
    except GearmanError:
        return 0
    return sum(1 for line in lines if line.partition(" : ")[2].strip())


def _wait_registered(worker: WorkerProcess, addresses: Sequence[str], before: list[int]) -> None:
    deadline = time.monotonic() + REGISTER_TIMEOUT
    while time.monotonic() < deadline:
        assert worker.process is not None
        if worker.process.poll() is not None:
            raise RuntimeError(f"the gearworker process exited:\n{worker.output()}")
        counts = [_worker_lines(a) for a in addresses]
        if all(now > then for now, then in zip(counts, before, strict=True)):
            return
        time.sleep(0.05)
    raise RuntimeError(
        f"the gearworker process did not register within {REGISTER_TIMEOUT} s:\n{worker.output()}"
    )


@pytest.fixture
def gearattach_worker_factory(transactional_db: None) -> Iterator[Callable[..., WorkerProcess]]:
    from ..conf import conf

    settings_module = os.environ.get("DJANGO_SETTINGS_MODULE")
    if not settings_module:
        raise pytest.UsageError(
            "gearattach workers need DJANGO_SETTINGS_MODULE (pytest-django's --ds or "
            "DJANGO_SETTINGS_MODULE in pytest's configuration)"
        )
    env = {
        "GEARATTACH_TEST_DATABASES": json.dumps(_test_databases()),
        "DJANGO_SETTINGS_MODULE": settings_module,
        "PYTHONPATH": os.pathsep.join(p or os.getcwd() for p in sys.path),
    }
    started: list[WorkerProcess] = []

    def start(servers: Sequence[Gearmand] | None = None, *args: str) -> WorkerProcess:
        addresses = (
            [s.address for s in servers] if servers is not None else [str(a) for a in conf.SERVERS]
        )
        worker = WorkerProcess(addresses, settings_module, env=env, args=args)
        worker.cmd = [sys.executable, "-m", "django_gearattach.testworker", *args]
        before = [_worker_lines(a) for a in addresses]
        started.append(worker.start())
        _wait_registered(worker, addresses, before)
        return worker

    yield start
    for worker in started:
        worker.cleanup()


@pytest.fixture
def gearattach_worker(
    gearattach_gearmand: Gearmand, gearattach_worker_factory: Callable[..., WorkerProcess]
) -> WorkerProcess:
    return gearattach_worker_factory([gearattach_gearmand])


@pytest.fixture
def gearattach_immediate(settings: Any) -> None:
    current = getattr(settings, "GEARATTACH", None) or {}
    settings.GEARATTACH = {**current, "IMMEDIATE": True}


if find_spec("celery") is None:

    @pytest.fixture
    def celery_worker(gearattach_worker: WorkerProcess) -> WorkerProcess:
        """A worker for tests migrated from Celery (``celery.contrib.pytest``'s name)."""
        return gearattach_worker

    @pytest.fixture
    def celery_app() -> Any:
        """The Celery shim's app object (``celery.contrib.pytest``'s name)."""
        from ..celery import app

        return app
