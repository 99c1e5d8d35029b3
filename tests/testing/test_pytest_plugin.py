"""The pytest plugin shipped for users: a user's test suite, run in a pytest subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import tomllib
from importlib.metadata import entry_points
from pathlib import Path
from urllib.parse import urlparse, urlunparse

import pytest

ROOT = Path(__file__).resolve().parents[2]
PLUGIN = "django_gearattach.pytest_plugin"

USER_TESTS = """
import pytest

from django_gearattach import attach, submit
from django_gearattach.models import Job


def test_a_real_worker_runs_the_job(gearattach_worker):
    job = submit("tests.add", [2, 3])
    assert list(attach(job, timeout=20))[-1].as_dict() == {"event": "complete", "result": 5}
    assert Job.objects.get(pk=job.pk).worker_pid == gearattach_worker.pid


@pytest.mark.django_db
def test_immediate_mode(gearattach_immediate):
    assert submit("tests.add", [1, 1]).result == 2


def test_several_servers(gearattach_gearmand_factory, gearattach_worker_factory, settings):
    one, two = gearattach_gearmand_factory(), gearattach_gearmand_factory()
    settings.GEARATTACH = {**settings.GEARATTACH, "SERVERS": [one.address, two.address]}
    gearattach_worker_factory([one, two])
    jobs = [submit("tests.add", [i, i]) for i in range(24)]
    for i, job in enumerate(jobs):
        assert list(attach(job, timeout=20))[-1].result == 2 * i
    assert {Job.objects.get(pk=j.pk).server for j in jobs} == {one.address, two.address}


def test_celery_style_fixtures(celery_worker, celery_app):
    from tests.celeryapp.tasks import add

    assert add.delay(2, 2).get(timeout=20) == 4
    assert celery_app.AsyncResult(add.delay(3, 3).id).get(timeout=20) == 6
"""


def run_user_suite(tmp_path: Path, *args: str, settings: str = "tests.settings") -> str:
    (tmp_path / "pytest.ini").write_text(
        f"[pytest]\nDJANGO_SETTINGS_MODULE = {settings}\n"
        "asyncio_default_fixture_loop_scope = function\n"
    )
    (tmp_path / "test_users.py").write_text(USER_TESTS)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(tmp_path)])}
    for inherited in ("PYTEST_ADDOPTS", "DJANGO_SETTINGS_MODULE"):
        env.pop(inherited, None)
    if env.get("DATABASE_URL"):
        # Never the database this suite is using: the inner run creates and drops its own.
        url = urlparse(env["DATABASE_URL"])
        env["DATABASE_URL"] = urlunparse(url._replace(path="/gearattach_plugin"))
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    return done.stdout + done.stderr


def test_the_fixtures_in_a_users_suite(tmp_path):
    output = run_user_suite(tmp_path, "-p", PLUGIN)
    assert "4 passed" in output, output


def test_the_entry_point_is_declared():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert project["project"]["entry-points"]["pytest11"] == {PLUGIN: PLUGIN}


def test_the_installed_entry_point_loads_the_plugin_by_itself(tmp_path):
    if not entry_points(group="pytest11", name=PLUGIN):
        pytest.skip(
            "django-gearattach is not pip-installed in this environment, so its entry point "
            "is not registered (the tox legs install it)"
        )
    assert "4 passed" in run_user_suite(tmp_path)


def test_an_in_memory_test_database_is_refused_loudly(tmp_path):
    (tmp_path / "memsettings.py").write_text(
        textwrap.dedent(
            """
            from tests.settings import *  # noqa: F403

            DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}}
            """
        )
    )
    output = run_user_suite(tmp_path, "-p", PLUGIN, "-k", "real_worker", settings="memsettings")
    assert "1 error" in output, output
    assert "in-memory SQLite database, which a worker process cannot share" in output
