"""Fixtures that start real gearmand servers and real gearworker processes."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from django.db import connection

from django_gearattach.testing import Gearmand, GearmandNotFound, WorkerProcess, find_gearmand
from tests.dbproxy import DatabaseProxy
from tests.triggers import Triggers

ROOT = Path(__file__).resolve().parent.parent


def pytest_sessionstart(session: pytest.Session) -> None:
    try:
        find_gearmand()
    except GearmandNotFound as exc:
        # Never skip silently: a run without gearmand fails loudly, saying how to fix it.
        raise pytest.UsageError(str(exc)) from None


def _on_postgresql() -> bool:
    from django.conf import settings

    return bool(settings.DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql")


_NOT_RUN: list[str] = []


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """``postgres_only`` tests (a database cut through a proxy in front of PostgreSQL)
    run on the PostgreSQL legs; ``own_sqlite`` scenarios (a browser, a new project: their
    servers use a SQLite database of their own whatever the leg's) run on the SQLite legs
    only, since a PostgreSQL leg would run them the same way again. Either is deselected
    elsewhere and listed at the end."""
    skipped_marker = "own_sqlite" if _on_postgresql() else "postgres_only"
    kept = [item for item in items if item.get_closest_marker(skipped_marker) is None]
    dropped = [item for item in items if item.get_closest_marker(skipped_marker) is not None]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept
        _NOT_RUN.extend(item.nodeid for item in dropped)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not _NOT_RUN:
        return
    if _on_postgresql():
        terminalreporter.section(
            "Scenarios on a SQLite database of their own: run on the SQLite legs"
        )
        why = "NOT RUN here (same on every leg; runs on the SQLite legs)"
    else:
        terminalreporter.section("PostgreSQL-only tests, not run on this database leg")
        why = "NOT RUN (needs DATABASE_URL=postgres://...)"
    for nodeid in _NOT_RUN:
        terminalreporter.line(f"{why}: {nodeid}")


@pytest.fixture
def gearmand_factory() -> Iterator[Callable[..., Gearmand]]:
    started: list[Gearmand] = []

    def start(*extra_args: str) -> Gearmand:
        server = Gearmand(extra_args=extra_args).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.__exit__()


@pytest.fixture
def gearmand(gearmand_factory: Callable[..., Gearmand], settings) -> Gearmand:
    """One gearmand, configured as the only server."""
    server = gearmand_factory()
    settings.GEARATTACH = {**settings.GEARATTACH, "SERVERS": [server.address]}
    return server


@pytest.fixture
def worker_factory(
    transactional_db: None,
) -> Iterator[Callable[..., WorkerProcess]]:
    """Start ``manage.py gearworker`` subprocesses on the test database."""
    started: list[WorkerProcess] = []
    env = {"GEARATTACH_TEST_DATABASE": str(connection.settings_dict["NAME"])}
    if os.environ.get("DATABASE_URL"):
        env["DATABASE_URL"] = os.environ["DATABASE_URL"]

    def start(
        servers: list[Gearmand], *args: str, extra_env: dict[str, str] | None = None
    ) -> WorkerProcess:
        worker = WorkerProcess(
            [s.address for s in servers],
            "tests.settings",
            env={**env, **(extra_env or {})},
            args=args,
            cwd=str(ROOT),
        ).start()
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.cleanup()


@pytest.fixture
def worker(gearmand: Gearmand, worker_factory: Callable[..., WorkerProcess]) -> WorkerProcess:
    return worker_factory([gearmand])


@pytest.fixture
def log_path(tmp_path: Path) -> Path:
    """A file the ``tests.record`` task appends one line to per execution."""
    return tmp_path / "executions.log"


def executions(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


@pytest.fixture
def triggers(gearmand: Gearmand, tmp_path: Path) -> Iterator[Triggers]:
    """Submitters in processes of their own (:class:`tests.triggers.Triggers`)."""
    env = {
        "GEARATTACH_TEST_DATABASE": str(connection.settings_dict["NAME"]),
        "GEARATTACH_SERVERS": gearmand.address,
    }
    started = Triggers(env, tmp_path / "go")
    yield started
    started.kill()


@pytest.fixture
def workers(gearmand: Gearmand, worker_factory: Callable[..., WorkerProcess]) -> WorkerProcess:
    """Three worker processes (one gearworker, ``--concurrency 3``)."""
    return worker_factory([gearmand], "--concurrency", "3")


@pytest.fixture
def database_proxy() -> Iterator[DatabaseProxy]:
    """A TCP relay in front of the test PostgreSQL (``postgres_only`` tests): a worker
    given ``extra_env={"DATABASE_URL": proxy.url(...)}`` loses its database on ``cut()``."""
    settings = connection.settings_dict
    proxy = DatabaseProxy(settings["HOST"] or "127.0.0.1", int(settings["PORT"] or 5432)).start()
    yield proxy
    proxy.close()
