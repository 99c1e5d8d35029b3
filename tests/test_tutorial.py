"""docs/web.rst's tutorial, exactly as written, in a new project under uvicorn.

The test reads the tutorial (its sections 1 to 4) in order. A code block whose first
line names a file (``# mysite/urls.py``, ``{# reports/templates/... #}``) is written to
that file, or added at its end when the line says "(add at the end)". Each ``$``
command of a console block is run as the tutorial says, in a new temporary directory:

* ``django-admin``, ``cd``, ``python manage.py ...`` and ``python -m uvicorn ...`` are
  run as written, with this virtualenv's Python (``gearworker`` and uvicorn in the
  background); uvicorn gets a free port with ``--port``;
* ``gearmand ...`` is started by the test on a free port, and the written files'
  ``4730`` becomes that port;
* ``apt-get`` and ``pip install`` lines are the environment: the test checks that
  what they install is there (gearmand, the app and the ``asgi`` extra) instead of
  installing it again.

Any other command fails the test, so a command added to the tutorial must be taught
here. Then Debian's chromium opens the report's URL as the tutorial says, sees the
page say that no worker runs the job, sees it recover once the tutorial's worker
starts, and ends on the report.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from django_gearattach.testing import Gearmand, find_gearmand, free_port, wait_for_port
from tests.browser import ARTIFACTS

# Its servers use a SQLite database of its own: the PostgreSQL legs would run it the
# same way again (tests/conftest.py).
pytestmark = pytest.mark.own_sqlite

pytest_plugins = ["tests.browser"]

ROOT = Path(__file__).resolve().parent.parent
TUTORIAL = ROOT / "docs" / "web.rst"
#: The sections the tutorial's project is built from.
FIRST, LAST = "1. Install", "5. One job for everyone asking the same thing"
FILE_LINE = re.compile(r"^(?:#|\{#)\s*(?P<path>[\w./-]+\.(?:py|html))(?P<rest>[^#}]*)(?:#\})?$")


@dataclass
class Step:
    kind: str  # "file" or "command"
    text: str
    path: str = ""
    append: bool = False


def tutorial_steps() -> list[Step]:
    """The code blocks and commands of sections 1-4, in the order the page gives them."""
    text = TUTORIAL.read_text()
    text = text[text.index(FIRST) : text.index(LAST)]
    steps: list[Step] = []
    for match in re.finditer(r"\.\. code-block:: (\S+)\n\n((?:   .*\n|\n)+)", text):
        language, body = match.group(1), match.group(2)
        lines = [line[3:] for line in body.rstrip().splitlines()]
        if language == "console":
            for line in lines:
                if line.startswith("$ "):
                    command = line[2:].split("  #")[0].strip()
                    steps.append(Step("command", command))
            continue
        named = FILE_LINE.match(lines[0].strip())
        if named is None:
            continue  # an excerpt that names no file: not part of the project
        append = "add at the end" in named.group("rest")
        content = "\n".join(lines[1:]) + "\n"
        steps.append(Step("file", content, named.group("path"), append))
    return steps


@dataclass
class Project:
    cwd: Path
    gearmand: Gearmand | None = None
    background: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    web_url: str = ""
    logs: Path = Path()

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "GEARATTACH_"))}
        env["PYTHONUNBUFFERED"] = "1"
        env.pop("DATABASE_URL", None)
        return env

    def port_of_gearmand(self, text: str) -> str:
        assert self.gearmand is not None, "a file names gearmand's port before it started"
        return text.replace("4730", str(self.gearmand.port))

    def write(self, step: Step) -> None:
        target = self.cwd / step.path
        target.parent.mkdir(parents=True, exist_ok=True)
        content = self.port_of_gearmand(step.text)
        if step.append:
            assert target.exists(), f"the tutorial adds to {step.path}, which does not exist"
            content = target.read_text() + "\n" + content
        target.write_text(content)

    def run(self, command: str) -> None:
        argv = shlex.split(command)
        if argv[:2] == ["sudo", "apt-get"]:
            find_gearmand()  # gearman-job-server: installed (else a clear error)
            return
        if argv[:4] == ["python", "-m", "pip", "install"]:
            for module in ("django_gearattach", "channels", "uvicorn", "wsproto"):
                assert importlib.util.find_spec(module), f"{module} (pip install) is missing"
            return
        if argv[0] == "gearmand":
            assert "--round-robin" in argv
            self.gearmand = Gearmand().start()
            return
        if argv[0] == "cd":
            self.cwd = self.cwd / argv[1]
            return
        if argv[0] == "django-admin":
            self.finish([sys.executable, "-m", "django", *argv[1:]])
            return
        if argv[:3] == ["python", "manage.py", "gearworker"]:
            self.start("gearworker", [sys.executable, *argv[1:]])
            return
        if argv[:2] == ["python", "manage.py"]:
            out = self.finish([sys.executable, *argv[1:]])
            # installation.rst's promise: the app's checks have nothing to say here.
            assert "gearattach.W" not in out, out
            return
        if argv[:3] == ["python", "-m", "uvicorn"]:
            port = free_port()
            self.start("uvicorn", [sys.executable, *argv[1:], f"--port={port}"])
            wait_for_port(port, timeout=30, process=self.background["uvicorn"])
            self.web_url = f"http://127.0.0.1:{port}"
            return
        pytest.fail(f"the tutorial runs {command!r}, which this test does not know")

    def finish(self, argv: list[str]) -> str:
        done = subprocess.run(argv, cwd=self.cwd, env=self.env(), capture_output=True, text=True)
        assert done.returncode == 0, f"{argv}: {done.stdout}{done.stderr}"
        return done.stdout + done.stderr

    def start(self, name: str, argv: list[str]) -> None:
        log = open(self.logs / f"{name}.log", "wb")  # noqa: SIM115 (closed with the process)
        self.background[name] = subprocess.Popen(
            argv, cwd=self.cwd, env=self.env(), stdout=log, stderr=subprocess.STDOUT
        )

    def log(self, name: str) -> str:
        path = self.logs / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        for process in self.background.values():
            process.terminate()
        for process in self.background.values():
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
        if self.gearmand is not None:
            self.gearmand.stop()


@pytest.fixture
def project(tmp_path: Path) -> Iterator[Project]:
    built = Project(cwd=tmp_path, logs=tmp_path)
    try:
        yield built
    finally:
        built.stop()


def test_the_tutorial_has_the_steps_this_test_runs() -> None:
    steps = tutorial_steps()
    files = [s.path for s in steps if s.kind == "file"]
    assert files == [
        "mysite/settings.py",
        "mysite/urls.py",
        "mysite/asgi.py",
        "reports/views.py",
        "reports/templates/reports/yearly.html",
    ]
    commands = [s.text for s in steps if s.kind == "command"]
    assert "python -m uvicorn mysite.asgi:application --ws wsproto" in commands
    assert commands.index("python manage.py migrate") < commands.index(
        "python manage.py gearworker --concurrency 2"
    )


def test_the_tutorial_works_as_written(project: Project, browser: Any) -> None:
    steps = tutorial_steps()
    # Everything up to the worker: the project, its files, the tables, the web server.
    worker_at = next(i for i, s in enumerate(steps) if "gearworker" in s.text)
    for step in steps[:worker_at]:
        if step.kind == "file":
            project.write(step)
        else:
            project.run(step.text)
    assert project.web_url, "the tutorial starts no web server before the worker"

    page = browser.new_context().new_page()
    script_errors: list[str] = []
    page.on("pageerror", lambda error: script_errors.append(str(error)))
    page.goto(f"{project.web_url}/reports/yearly/?year=2024")
    assert "gearattach=" in page.url  # the page's URL names the job now
    status = page.locator(".gearattach-status")
    # No worker yet: the page says so, within seconds.
    page.wait_for_function(
        "() => document.querySelector('.gearattach-status').textContent"
        ".startsWith('No worker is running for gearattach.offload')",
        timeout=15_000,
    )
    assert page.locator("h1").inner_text() == "Working on it…"
    page.screenshot(path=str(ARTIFACTS / "tutorial-no-worker.png"))

    for step in steps[worker_at:]:  # the worker, as the tutorial starts it
        assert step.kind == "command"
        project.run(step.text)
    seen: list[str] = []
    try:
        page.wait_for_function(
            "() => /^Step \\d+ of 12/.test("
            "document.querySelector('.gearattach-status')?.textContent || '')",
            timeout=30_000,
        )
        seen.append(status.inner_text())
        page.wait_for_selector("h1:text('Report 2024')", timeout=30_000)
    except Exception:
        print(project.log("gearworker"), project.log("uvicorn"), sep="\n")
        raise
    assert seen[0].startswith("Step ")
    cells = page.locator("td").all_inner_texts()
    assert cells[:2] == ["1", str((2024 * 31 + 977) % 10_000)]
    assert len(cells) == 24  # twelve months
    page.screenshot(path=str(ARTIFACTS / "tutorial-report.png"))
    # Reloading shows the stored report; nothing runs again.
    page.reload()
    assert page.locator("h1").inner_text() == "Report 2024"
    assert project.log("gearworker").count("job gearattach.offload[") == 1
    assert script_errors == []
    # The widget's script and style loaded under uvicorn, with no static files set-up.
    for asset in ("gearattach.js", "gearattach.css"):
        assert re.search(
            rf"GET /gearattach/widget/{asset}\?v=\w+ HTTP/1.1\" 200", project.log("uvicorn")
        )
