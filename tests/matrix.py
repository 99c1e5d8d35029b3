"""Run the whole test matrix through tox: lint, both Django versions on both databases, docs.

Called by ``make test``. It finds a Python >= 3.12 for the Django 6 legs and checks
that PostgreSQL answers; a leg that cannot run is reported loudly and, under CI
(``CI=true``) or with ``GEARATTACH_STRICT=1``, fails the run.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import sys
from urllib.parse import urlparse

PG_URL = os.environ.get("GEARATTACH_PG_URL", "postgres://postgres@127.0.0.1:5432/test")


def _works(python: str) -> bool:
    """True when ``python`` really runs and is 3.12+ (a pyenv shim may do neither)."""
    try:
        out = subprocess.run(
            [python, "-c", "import sys; print(sys.version_info >= (3, 12))"],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except OSError:
        return False
    return out.returncode == 0 and out.stdout.strip() == "True"


def find_python312() -> str | None:
    candidates = [shutil.which(name) for name in ("python3.12", "python3.13", "python3.14")]
    pattern = os.path.expanduser("~/.pyenv/versions/3.1[234]*/bin/python3.1[234]")
    candidates += sorted(glob.glob(pattern))
    for candidate in candidates:
        if candidate and _works(candidate):
            return candidate
    return None


def postgres_answers(url: str) -> bool:
    parsed = urlparse(url)
    try:
        socket.create_connection((parsed.hostname or "127.0.0.1", parsed.port or 5432), 3).close()
    except OSError:
        return False
    return True


def main() -> int:
    strict = os.environ.get("CI") == "true" or os.environ.get("GEARATTACH_STRICT") == "1"
    envs = ["lint", "package", "django52-sqlite"]
    missing = []
    env = dict(os.environ)
    if postgres_answers(PG_URL):
        envs.append("django52-postgres")
    else:
        missing.append(f"PostgreSQL does not answer at {PG_URL} (set GEARATTACH_PG_URL)")
    py312 = find_python312()
    if py312:
        env["GEARATTACH_PY312"] = py312
        envs.append("django6-sqlite")
        if "django52-postgres" in envs:
            envs.append("django6-postgres")
    else:
        missing.append("no Python 3.12+ found for the Django 6 legs (install python3.12)")
    envs.append("docs")
    for reason in missing:
        print(f"\n*** NOT RUN: {reason}\n", file=sys.stderr)
    if missing and strict:
        print("*** failing: every leg must run under CI", file=sys.stderr)
        return 1
    tox = os.path.join(os.path.dirname(sys.executable), "tox")
    cmd = [tox, "run", "-e", ",".join(envs), *sys.argv[1:]]
    print("+", " ".join(cmd), flush=True)
    code = subprocess.call(cmd, env=env)
    if missing:
        print("\n*** legs NOT RUN: " + "; ".join(missing), file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
