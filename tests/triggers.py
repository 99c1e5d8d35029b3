"""Submits of one key from processes of their own, all released at once by a gate file.

``python -m tests.triggers SPEC_JSON`` (the test database and gearmand come from the
environment, as for the gearworker subprocesses): waits for ``spec["gate"]`` to exist,
then calls ``submit(spec["function"], spec["args"], key=spec["key"], **spec.get("options", {}))``
``spec["count"]`` times, with ``{"n": i, "pid": pid}`` merged into the kwargs when
``spec["tag"]`` is set, and prints one JSON line: each submit's run number, status and
whether it asked for the follow-up (or a replacement) itself.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def main(spec: dict[str, Any]) -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
    import django

    django.setup()
    from django_gearattach import submit

    gate = Path(spec["gate"])
    deadline = time.monotonic() + 30
    while not gate.exists() and time.monotonic() < deadline:
        time.sleep(0.001)
    seen = []
    for n in range(spec["count"]):
        kwargs = dict(spec.get("kwargs", {}))
        if spec.get("tag"):
            kwargs["tag"] = f"{os.getpid()}-{n}"
        options = spec.get("options", {})
        job = submit(spec["function"], spec["args"], kwargs, key=spec["key"], **options)
        seen.append([job.run_number, job.status, job.next_reason])
        if spec.get("pause"):
            time.sleep(spec["pause"])
    print(json.dumps({"pid": os.getpid(), "seen": seen}))


class Triggers:
    """Start trigger processes; :meth:`release` opens their gate; :meth:`results` waits."""

    def __init__(self, env: dict[str, str], gate: Path) -> None:
        self.env = {**os.environ, **env, "DJANGO_SETTINGS_MODULE": "tests.settings"}
        self.gate = gate
        self.processes: list[subprocess.Popen[str]] = []

    def start(self, processes: int, **spec: Any) -> Triggers:
        spec["gate"] = str(self.gate)
        for _ in range(processes):
            self.processes.append(
                subprocess.Popen(
                    [sys.executable, "-m", "tests.triggers", json.dumps(spec)],
                    env=self.env,
                    cwd=str(ROOT),
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                )
            )
        return self

    def release(self) -> None:
        self.gate.touch()

    def results(self, timeout: float = 60.0) -> list[dict[str, Any]]:
        out = []
        for process in self.processes:
            stdout, stderr = process.communicate(timeout=timeout)
            assert process.returncode == 0, stderr
            out.append(json.loads(stdout.strip().splitlines()[-1]))
        return out

    def kill(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.kill()
                process.wait(5)


def starts(log_path: Path) -> list[str]:
    """The ``start`` lines ``tests.probe`` (and its siblings) logged: one per execution."""
    return _lines(log_path, "start ")


def _lines(log_path: Path, prefix: str) -> list[str]:
    lines = log_path.read_text().splitlines() if log_path.exists() else []
    return [line for line in lines if line.startswith(prefix)]


def events(log_path: Path) -> list[tuple[str, float, str]]:
    """(event, time, tag) of each line ``tests.probe`` logged, in order."""
    out = []
    for line in _lines(log_path, ""):
        event, at, _pid, *tag = line.split(" ")
        out.append((event, float(at), tag[0] if tag else ""))
    return out


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
