"""The interpreter the peer queues run in, kept apart from the app's own environments.

By default a virtualenv of their own, ``.venv-peers`` in the current directory, created
on first use from the ``bench`` extra's list (pyproject.toml), so that neither ``.venv``
nor the test matrix's tox environments ever hold Dramatiq, Huey or Celery. ``--peers-python``
names another interpreter instead (the main one after ``pip install -e '.[bench]'``,
say); that one is checked and never installed into.
"""

from __future__ import annotations

import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

DEFAULT_VENV = Path(".venv-peers")
#: What the driver imports: each peer, and the Redis client they share.
MODULES = ("dramatiq", "huey", "celery", "redis")
# The bench extra as pyproject.toml declares it, for a checkout whose metadata is older.
FALLBACK = ("dramatiq[redis]==2.2.1", "huey==3.5.4", "celery[redis]==5.7.0", "redis==8.2.0")


class PeersUnavailable(Exception):
    """The peers' interpreter lacks the peers and cannot be given them."""


def requirements() -> list[str]:
    """The ``bench`` extra's requirements, from the installed package's metadata."""
    try:
        declared = metadata.requires("django-gearattach") or []
    except metadata.PackageNotFoundError:
        declared = []
    extra = re.compile(r";\s*extra\s*==\s*['\"]bench['\"]\s*$")
    found = [extra.sub("", line).strip() for line in declared if extra.search(line)]
    return found or list(FALLBACK)


def install_hint(python: str | None = None) -> str:
    quoted = " ".join(f"'{r}'" for r in requirements())
    if python is None:
        return (
            f"let the bench create {DEFAULT_VENV} (run it again without --peers-python), "
            f"or: {sys.executable} -m venv {DEFAULT_VENV} && "
            f"{DEFAULT_VENV}/bin/pip install {quoted}"
        )
    return f"{python} -m pip install {quoted} (or pip install -e '.[bench]' in that environment)"


def missing(python: str) -> list[str]:
    """The peer modules ``python`` cannot import (all of them if it does not run)."""
    probe = (
        "import importlib.util, sys; "
        f"print(' '.join(m for m in {MODULES!r} if importlib.util.find_spec(m) is None))"
    )
    try:
        done = subprocess.run(
            [python, "-c", probe], capture_output=True, text=True, timeout=60, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return list(MODULES)
    return done.stdout.split()


def peers_python(explicit: str | None, venv: Path = DEFAULT_VENV) -> str:
    """The interpreter to run the peers with; creates ``venv`` on first use.

    Raises :class:`PeersUnavailable`, with what to run, when it lacks them."""
    if explicit is not None:
        absent = missing(explicit)
        if absent:
            raise PeersUnavailable(
                f"--peers needs {', '.join(absent)} in {explicit}, which lacks them. "
                f"Install them with: {install_hint(explicit)}"
            )
        return explicit
    python = str(venv / "bin" / "python")
    if Path(python).exists() and not missing(python):
        return python
    wanted = requirements()
    print(
        f"Installing the peer queues into {venv} (once; the app's own environments are "
        f"not touched): {' '.join(wanted)}",
        file=sys.stderr,
    )
    try:
        if not Path(python).exists():
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([python, "-m", "pip", "install", "--quiet", *wanted], check=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        raise PeersUnavailable(
            f"--peers could not install the peer queues into {venv} ({exc}). "
            f"Install them by hand: {install_hint()}"
        ) from exc
    absent = missing(python)
    if absent:
        raise PeersUnavailable(f"{venv} still lacks {', '.join(absent)}: {install_hint()}")
    return python
