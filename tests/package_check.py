"""The release check: build, ``twine check``, install in a fresh virtualenv, run the demo.

``python tests/package_check.py`` (the ``package`` leg of ``make test``):

1. ``python -m build`` makes the sdist, then the wheel from the sdist (so a file missing
   from the sdist breaks the wheel);
2. ``twine check --strict`` checks both (metadata, README rendering);
3. the wheel holds the templates, static files, migrations, ``py.typed`` and every
   language's compiled catalog (``locale/*/LC_MESSAGES/django.mo``, up to date with its
   ``.po``), and the version of ``django_gearattach.__version__``;
4. a fresh virtualenv gets the wheel with its ``demo`` extra (from the package index,
   or pip's cache), and nothing else;
5. ``example_project`` from the sdist, alone in a directory (so that the installed
   wheel, not a checkout, is what it imports), runs its ``rundemo.py``: gearmand, two
   workers and uvicorn; the home page answers, the admin's login is printed, a job
   submitted with ``manage.py gearattach submit`` completes, and Ctrl-C stops
   everything with status 0.

It prints each step and fails with the step's output.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.request
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from django_gearattach import __version__  # noqa: E402
from django_gearattach.testing import free_port, wait_for_port  # noqa: E402

WHEEL_MUST_HAVE = [
    "django_gearattach/py.typed",
    "django_gearattach/migrations/0001_initial.py",
    "django_gearattach/templates/gearattach/widget.html",
    "django_gearattach/static/gearattach/gearattach.js",
    "django_gearattach/templates/admin/django_gearattach/job/change_list.html",
]


class CheckFailed(Exception):
    pass


def step(text: str) -> None:
    print(f"package check: {text}", flush=True)


def run(cmd: list[str], **kwargs: object) -> str:
    result = subprocess.run(cmd, capture_output=True, text=True, **kwargs)  # type: ignore[call-overload]
    if result.returncode != 0:
        raise CheckFailed(
            f"{' '.join(map(str, cmd))} exited with {result.returncode}\n"
            f"{result.stdout}\n{result.stderr}"
        )
    return str(result.stdout)


def build(out: Path) -> tuple[Path, Path]:
    step("python -m build (sdist, then the wheel from the sdist)")
    run([sys.executable, "-m", "build", "--outdir", str(out), str(ROOT)])
    sdists, wheels = list(out.glob("*.tar.gz")), list(out.glob("*.whl"))
    if len(sdists) != 1 or len(wheels) != 1:
        raise CheckFailed(f"expected one sdist and one wheel, found {sdists + wheels}")
    for path in (sdists[0], wheels[0]):
        if f"-{__version__}" not in path.name:
            raise CheckFailed(f"{path.name} does not carry the version {__version__}")
    step("twine check --strict")
    run([sys.executable, "-m", "twine", "check", "--strict", str(sdists[0]), str(wheels[0])])
    names = set(zipfile.ZipFile(wheels[0]).namelist())
    missing = [name for name in WHEEL_MUST_HAVE if name not in names]
    if missing:
        raise CheckFailed(f"the wheel lacks {missing}")
    catalogs = sorted((ROOT / "django_gearattach" / "locale").glob("*/LC_MESSAGES/django.po"))
    if not catalogs:
        raise CheckFailed("no translation catalogs in django_gearattach/locale/")
    for po in catalogs:
        compiled = f"django_gearattach/{po.relative_to(ROOT / 'django_gearattach')}"[:-2] + "mo"
        if compiled not in names:
            raise CheckFailed(f"the wheel lacks {compiled}: run compilemessages")
    if any(name.startswith(("tests/", "example_project/")) for name in names):
        raise CheckFailed("the wheel carries tests/ or example_project/")
    return sdists[0], wheels[0]


def install(wheel: Path, venv: Path) -> Path:
    step(f"a fresh virtualenv with {wheel.name}[demo]")
    run([sys.executable, "-m", "venv", str(venv)])
    python = venv / "bin" / "python"
    run([str(python), "-m", "pip", "install", "--quiet", f"{wheel}[demo]"])
    where = run(
        [str(python), "-c", "import django_gearattach as m; print(m.__version__, m.__file__)"],
        cwd=venv,
    ).split()
    if where[0] != __version__ or str(venv) not in where[1]:
        raise CheckFailed(f"the fresh virtualenv imports {where}, not the installed wheel")
    return python


def run_demo(python: Path, sdist: Path, work: Path) -> None:
    step("example_project from the sdist: rundemo.py, a page, a job, Ctrl-C")
    with tarfile.open(sdist) as archive:
        archive.extractall(work / "sdist", filter="data")
    (unpacked,) = (work / "sdist").iterdir()
    site = work / "site"
    shutil.copytree(unpacked / "example_project", site / "example_project")
    web_port = free_port()
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(work),
        "DEMO_PORT": str(web_port),
        "GEARATTACH_SERVERS": f"127.0.0.1:{free_port()}",
        "DATABASE_URL": f"sqlite:///{work}/demo.sqlite3",
        "PYTHONUNBUFFERED": "1",
    }
    if os.environ.get("GEARMAND"):
        env["GEARMAND"] = os.environ["GEARMAND"]
    log = open(work / "rundemo.log", "w+")  # noqa: SIM115 - read back on failure
    demo = subprocess.Popen(
        [str(python), "example_project/rundemo.py"],
        cwd=site,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        while "the demo is running" not in (work / "rundemo.log").read_text():
            if demo.poll() is not None or time.monotonic() > deadline:
                raise CheckFailed("rundemo.py did not start")
            time.sleep(0.2)
        wait_for_port(web_port)
        with urllib.request.urlopen(f"http://127.0.0.1:{web_port}/", timeout=10) as page:
            if page.status != 200:
                raise CheckFailed(f"the demo's home page answered {page.status}")
        said = (work / "rundemo.log").read_text()
        if not re.search(
            rf"its admin is at http://127.0.0.1:{web_port}/admin/ +\(user admin, password \S+\)",
            said,
        ):
            raise CheckFailed("rundemo.py did not print the admin's login")
        manage = [str(python), "example_project/manage.py", "gearattach"]
        key = run(
            [*manage, "submit", "example.slow", "--kwargs", '{"seconds": 0.2}'], cwd=site, env=env
        )
        events = run(
            [*manage, "attach", "example.slow", key.strip(), "--json", "--timeout", "30"],
            cwd=site,
            env=env,
        )
        last = json.loads(events.splitlines()[-1])
        if last.get("event") != "complete" or not re.match(r".+-\d+-", last["result"]["done"]):
            raise CheckFailed(f"the demo job did not complete: {events}")
        demo.send_signal(signal.SIGINT)
        code = demo.wait(60)
        if code != 0:
            raise CheckFailed(f"rundemo.py exited with {code} after Ctrl-C")
    except BaseException:
        log.seek(0)
        print(log.read(), file=sys.stderr)
        raise
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()
        log.close()


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="gearattach-package-") as tmp:
        work = Path(tmp)
        try:
            sdist, wheel = build(work / "dist")
            python = install(wheel, work / "venv")
            run_demo(python, sdist, work)
        except CheckFailed as exc:
            print(f"package check FAILED: {exc}", file=sys.stderr)
            return 1
    step(f"ok: django-gearattach {__version__} builds, installs and runs its demo")
    return 0


if __name__ == "__main__":
    sys.exit(main())
