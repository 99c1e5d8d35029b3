"""A Django project laid out as Celery's Django guide lays one out, run as subprocesses.

``tests/celeryproj`` has ``proj/celery.py`` imported from ``proj/__init__.py``,
``@shared_task`` tasks in ``demoapp/tasks.py`` and ``CELERY_*`` settings, written as
Celery's docs write them with only the ``celery`` import lines changed. Here it runs
as its users would run it: ``manage.py check``, ``migrate``, two ``gearworker --beat``
processes (so two schedulers) and application code calling the tasks, against a
real gearmand.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from django_gearattach.testing import Gearmand, wait_for_workers

# Its servers use a SQLite database of its own: the PostgreSQL legs would run it the
# same way again (tests/conftest.py).
pytestmark = pytest.mark.own_sqlite

PROJECT = Path(__file__).resolve().parents[1] / "celeryproj"


@pytest.fixture
def project(tmp_path: Path) -> Callable[..., subprocess.CompletedProcess[str]]:
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("DJANGO_SETTINGS_MODULE", "DATABASE_URL")
    }
    env["CELERYPROJ_DB"] = str(tmp_path / "project.sqlite3")
    env["CELERYPROJ_HEARTBEATS"] = str(tmp_path / "heartbeats.log")

    def manage(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=PROJECT,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    manage.env = env  # type: ignore[attr-defined]
    return manage


def test_manage_py_check_starts_the_standard_layout(project):
    checked = project("check")
    assert checked.returncode == 0, checked.stderr
    assert "AppRegistryNotReady" not in checked.stderr
    # CELERY_TASK_TIME_LIMIT is set, as in Celery's guide, and cannot be honoured: said so.
    assert "gearattach.W101" in checked.stderr
    assert "'task_time_limit'" in checked.stderr
    assert "broker_url" not in checked.stderr  # transport settings are replaced, not warned


def test_the_project_runs_its_tasks_through_gearmand(project, gearmand_factory, tmp_path):
    server: Gearmand = gearmand_factory()
    env = {**project.env, "GEARATTACH_SERVERS": server.address}
    project.env.update(env)
    migrated = project("migrate", "-v", "0")
    assert migrated.returncode == 0, migrated.stderr
    workers = [
        subprocess.Popen(
            [sys.executable, "manage.py", "gearworker", "--beat"],
            cwd=PROJECT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=open(tmp_path / f"worker-{n}.log", "wb"),  # noqa: SIM115
            start_new_session=True,
        )
        for n in range(2)
    ]
    try:
        wait_for_workers(server.address, "demoapp.tasks.add", count=2)
        started = time.monotonic()
        demo = project("celerydemo")
        assert demo.returncode == 0, demo.stderr
        out = json.loads(demo.stdout)
        assert out["add"] == 8
        assert out["state"] in ("PENDING", "STARTED", "SUCCESS")
        assert out["does_not_exist"] == "Widget matching query does not exist."
        assert out["chain"] == 32
        assert out["group"] == [0, 2, 4, 6, 8]
        assert out["chord"] == 20
        assert out["retry"] == {"url": "http://example.invalid", "retries": 1}
        assert out["messages"][-1] == "SUCCESS"
        assert "PROGRESS" in out["messages"]
        assert out["debug_task"] == [None, "SUCCESS"]  # ignore_result: status, no value
        # Two schedulers ran meanwhile: every tick is one job and ran once.
        time.sleep(max(0.0, 3 - (time.monotonic() - started)))
    finally:
        for worker in workers:
            os.killpg(worker.pid, signal.SIGTERM)
        for worker in workers:
            worker.wait(20)
    beats = Path(env["CELERYPROJ_HEARTBEATS"]).read_text().split()
    ticks = project(
        "shell",
        "-c",
        "from django_gearattach.models import Job; "
        "keys = list(Job.objects.filter(function='demoapp.tasks.heartbeat', status='complete')"
        ".values_list('key', flat=True)); print(len(keys), len(set(keys)))",
    )
    assert ticks.returncode == 0, ticks.stderr
    complete, distinct = map(int, ticks.stdout.splitlines()[-1].split())
    assert complete == distinct >= 2
    assert len(beats) == complete  # the heartbeat task ran once per tick, not twice
    logs = "".join((tmp_path / f"worker-{n}.log").read_text() for n in range(2))
    # A failed job is logged with its traceback (the demo fails one on purpose: the
    # widget it renames does not exist); any other traceback would be a crash.
    raised = [line for line in logs.splitlines() if " raised " in line]
    assert raised
    assert all("demoapp.tasks.rename_widget" in line for line in raised)
    assert logs.count("Traceback") == len(raised)
