"""Key policies under load: ``python -m django_gearattach.bench --policies``.

On SQLite (a fresh database file), one gearmand and two worker processes:

* **coalescing**: a run of a ``follow_up`` key (``@task(on_conflict="follow_up")``) is
  held while 8 processes submit the key 1,000 times in all. Printed: how many
  follow-up runs started (the guarantee is 1), and the submits' latency.
* **a stale shared page**: ``@offload(key=..., shared=True, max_age=1,
  stale_while_revalidate=3600)`` is built, goes stale, and 8 processes ask for it
  1,000 times in all while its refresh is held. Printed: how many answers were the
  stored page (the guarantee is all), each answer's latency through Django's request
  handler in the visitor's own process (no HTTP server in front), and how many
  refreshes started (the guarantee is 1).

Each role runs in a process of its own (Django is configured once per process):
``python -m django_gearattach.bench.policies main|worker|trigger|visitor ...``; ``main``
prints a table, then one JSON line.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import django
from django.conf import settings

from ..testing import Gearmand, wait_for_workers
from .e2e import database

PROCESSES = 8
TOTAL = 1000
KEY = "tenant-7"


def configure(db: str, server: str) -> None:
    settings.configure(
        INSTALLED_APPS=["django.contrib.contenttypes", "django.contrib.auth", "django_gearattach"],
        DATABASES={"default": database(f"sqlite:///{db}")},
        USE_TZ=True,
        SECRET_KEY=os.environ["GEARATTACH_BENCH_SECRET"],
        ROOT_URLCONF="django_gearattach.bench.policyapp",
        TEMPLATES=[
            {
                "BACKEND": "django.template.backends.django.DjangoTemplates",
                "APP_DIRS": True,
                "OPTIONS": {"context_processors": ["django.template.context_processors.request"]},
            }
        ],
        STATIC_URL="/static/",
        ALLOWED_HOSTS=["*"],
        MIDDLEWARE=[],
        GEARATTACH={"SERVERS": [server]},
        LOGGING_CONFIG=None,
    )
    django.setup()
    from . import policyapp  # noqa: F401 (registers the task and the view)


def _wait_for(path: Path) -> None:
    deadline = time.monotonic() + 120
    while not path.exists():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{path} never appeared")
        time.sleep(0.001)


# -- the roles ----------------------------------------------------------------------------------
def run_worker(db: str, server: str) -> None:
    configure(db, server)
    from ..gearman.rendezvous import Address
    from ..tasks import registered_tasks
    from ..web.messages import OFFLOAD_FUNCTION
    from ..worker.loop import Worker
    from .policyapp import REBUILD

    tasks = [registered_tasks()[name] for name in (REBUILD, OFFLOAD_FUNCTION)]
    worker = Worker(tasks, [Address.parse(server)])
    signal.signal(signal.SIGTERM, lambda *_: worker.stop())
    worker.run()


def run_trigger(db: str, server: str, count: int, start: str, log: str, gate: str) -> None:
    """Submit the coalescing key ``count`` times: print each submit's seconds."""
    configure(db, server)
    from ..submission import submit
    from .policyapp import REBUILD

    _wait_for(Path(start))
    seconds = []
    for n in range(count):
        began = time.perf_counter()
        submit(REBUILD, [log], {"gate": gate, "trigger": f"{os.getpid()}-{n}"}, key=KEY)
        seconds.append(time.perf_counter() - began)
    print(json.dumps({"seconds": seconds}))


def run_visitor(
    db: str, server: str, count: int, start: str, log: str, gate: str, page: str
) -> None:
    """Ask for the page ``count`` times: print each answer's seconds (wall and CPU) and
    what it was."""
    configure(db, server)
    from django.test import Client

    client = Client()
    stored_run = Path(log).read_text().split()[0]
    _wait_for(Path(start))
    seconds, cpu, stored, updating = [], [], 0, 0
    for _ in range(count):
        began, began_cpu = time.perf_counter(), time.process_time()
        response = client.get("/report/", {"log": log, "gate": gate, "page": page})
        seconds.append(time.perf_counter() - began)
        cpu.append(time.process_time() - began_cpu)
        body = response.content.decode()
        if response.status_code == 200 and stored_run in body:
            stored += 1
            updating += "gearattach-updating" in body
    print(json.dumps({"seconds": seconds, "cpu": cpu, "stored": stored, "updating": updating}))


# -- the orchestration ----------------------------------------------------------------------------
def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def _spawn(role: str, db: str, server: str, *args: str) -> subprocess.Popen[str]:
    cmd = [sys.executable, "-m", "django_gearattach.bench.policies", role, db, server, *args]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)


def _results(procs: list[subprocess.Popen[str]]) -> list[dict[str, Any]]:
    out = []
    for proc in procs:
        stdout, _ = proc.communicate(timeout=300)
        if proc.returncode:
            raise RuntimeError(f"a benchmark process failed ({proc.returncode})")
        out.append(json.loads(stdout.strip().splitlines()[-1]))
    return out


def _lines(path: Path) -> int:
    return len(path.read_text().split()) if path.exists() else 0


def _until(predicate: Any, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.01)


def _coalescing(db: str, server: str, tmp: Path) -> dict[str, Any]:
    from ..models import Job, Status
    from ..submission import submit
    from .policyapp import REBUILD

    log, gate, start = tmp / "rebuilds.log", tmp / "rebuild-gate", tmp / "go-triggers"
    submit(REBUILD, [str(log)], {"gate": str(gate), "trigger": "first"}, key=KEY)
    _until(lambda: _lines(log) == 1, "the first run to start")
    each = TOTAL // PROCESSES
    procs = [
        _spawn("trigger", db, server, str(each), str(start), str(log), str(gate))
        for _ in range(PROCESSES)
    ]
    time.sleep(2)  # the processes set Django up, then wait for the start file
    began = time.perf_counter()
    start.touch()
    seconds = [s for result in _results(procs) for s in result["seconds"]]
    wall = time.perf_counter() - began
    during = Job.objects.get(key=KEY)
    gate.touch()
    _until(
        lambda: Job.objects.filter(key=KEY, run_number=2, status=Status.COMPLETE).exists(),
        "the follow-up to finish",
    )
    time.sleep(1.0)  # time for a (wrong) third run to show
    record = Job.objects.get(key=KEY)
    return {
        "triggers": len(seconds),
        "still_first_run": during.run_number == 1 and during.status == Status.RUNNING,
        "follow_ups": _lines(log) - 1,
        "run_number": record.run_number,
        "p50_ms": _percentile(seconds, 0.5) * 1000,
        "p99_ms": _percentile(seconds, 0.99) * 1000,
        "wall_s": wall,
    }


def _stale_page(db: str, server: str, tmp: Path, processes: int) -> dict[str, Any]:
    from django.test import Client

    from ..models import Job, Status
    from ..web.messages import OFFLOAD_FUNCTION
    from .policyapp import MAX_AGE

    name = f"page-{processes}"
    log, gate, start = tmp / f"{name}.log", tmp / f"{name}-gate", tmp / f"{name}-go"
    first = Client().get("/report/", {"log": str(log), "page": name})
    if first.status_code != 202:
        raise RuntimeError(f"the first request got {first.status_code}")
    newest = Job.objects.filter(function=OFFLOAD_FUNCTION).latest("created_at")
    page = Job.objects.filter(pk=newest.pk)
    _until(lambda: page.filter(status=Status.COMPLETE).exists(), "the page to be built")
    each = TOTAL // processes
    procs = [
        _spawn("visitor", db, server, str(each), str(start), str(log), str(gate), name)
        for _ in range(processes)
    ]
    time.sleep(max(2.0, MAX_AGE + 0.5))  # Django set up in each, and the page stale
    began = time.perf_counter()
    start.touch()
    results = _results(procs)
    wall = time.perf_counter() - began
    seconds = [s for result in results for s in result["seconds"]]
    cpu = [s for result in results for s in result["cpu"]]
    gate.touch()
    _until(lambda: page.get().status == Status.COMPLETE, "the refresh to finish")
    time.sleep(1.0)
    return {
        "processes": processes,
        "visitors": len(seconds),
        "stored": sum(r["stored"] for r in results),
        "updating": sum(r["updating"] for r in results),
        "refreshes": _lines(log) - 1,
        "run_number": page.get().run_number,
        "p50_ms": _percentile(seconds, 0.5) * 1000,
        "p95_ms": _percentile(seconds, 0.95) * 1000,
        "p99_ms": _percentile(seconds, 0.99) * 1000,
        "max_ms": max(seconds) * 1000,
        "cpu_p50_ms": _percentile(cpu, 0.5) * 1000,
        "cpu_p99_ms": _percentile(cpu, 0.99) * 1000,
        "wall_s": wall,
    }


def run_main() -> dict[str, Any]:
    os.environ.setdefault("GEARATTACH_BENCH_SECRET", secrets.token_hex(32))
    with Gearmand() as gearmand, tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        db, server = str(tmp / "bench.sqlite3"), gearmand.address
        configure(db, server)
        from django.core.management import call_command

        from .policyapp import REBUILD

        call_command("migrate", verbosity=0)
        workers = [_spawn("worker", db, server) for _ in range(2)]
        try:
            wait_for_workers(server, REBUILD, 2)
            cores = os.cpu_count() or 1
            return {
                "cores": cores,
                "load": os.getloadavg()[0],
                "coalescing": _coalescing(db, server, tmp),
                "stale": [_stale_page(db, server, tmp, n) for n in (PROCESSES, cores)],
            }
        finally:
            for worker in workers:
                worker.send_signal(signal.SIGTERM)
            for worker in workers:
                worker.wait(30)


def report(figures: dict[str, Any]) -> str:
    c = figures["coalescing"]
    lines = [
        f"{figures['cores']} cores, load average {figures['load']:.1f} at the start",
        f"coalescing: {c['triggers']} submits of one follow_up key from {PROCESSES} "
        f"processes during one run ({c['wall_s']:.2f} s)",
        f"  follow-up runs started: {c['follow_ups']} (run_number {c['run_number']}; "
        f"the first run still running throughout: {c['still_first_run']})",
        f"  submit latency: p50 {c['p50_ms']:.2f} ms, p99 {c['p99_ms']:.2f} ms",
    ]
    for s in figures["stale"]:
        lines += [
            f"stale page: {s['visitors']} requests from {s['processes']} processes while "
            f"the refresh ran ({s['wall_s']:.2f} s)",
            f"  answered with the stored page: {s['stored']} (marked updating: "
            f"{s['updating']}); refreshes started: {s['refreshes']}",
            f"  answer latency: p50 {s['p50_ms']:.2f} ms, p95 {s['p95_ms']:.2f} ms, "
            f"p99 {s['p99_ms']:.2f} ms, max {s['max_ms']:.2f} ms",
            f"  CPU per answer: p50 {s['cpu_p50_ms']:.2f} ms, p99 {s['cpu_p99_ms']:.2f} ms",
        ]
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    role, *rest = argv
    if role == "main":
        figures = run_main()
        print(report(figures))
        print(json.dumps(figures))
    elif role == "worker":
        run_worker(*rest)
    elif role == "trigger":
        db, server, count, *paths = rest
        run_trigger(db, server, int(count), *paths)
    elif role == "visitor":
        db, server, count, start, log, gate, page = rest
        run_visitor(db, server, int(count), start, log, gate, page)
    else:
        raise SystemExit(f"unknown role {role!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
