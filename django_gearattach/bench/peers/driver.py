"""One peer queue in the shapes of the app's rows (a) and (b); prints one JSON line.

``python driver.py dramatiq|huey|celery REDIS_URL REDIS_PID WORKERS TRIPS JOBS`` in the
peers' interpreter (the standard library and the peer only: this package may not be
installed there). It starts the peer's documented worker command with ``WORKERS``
processes, warms it up, measures, and stops the workers it started (by process group).
"""

import importlib
import json
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
TICKS = os.sysconf("SC_CLK_TCK")


def worker_command(lib: str, workers: int) -> list[str]:
    """Each library's documented worker command, with ``workers`` processes."""
    bin_dir = Path(sys.executable).parent
    if lib == "dramatiq":
        return [
            str(bin_dir / "dramatiq"),
            "peer_dramatiq",
            "--processes",
            str(workers),
            "--threads",
            "8",
        ]
    if lib == "huey":
        return [
            str(bin_dir / "huey_consumer"),
            "peer_huey.huey",
            "-k",
            "process",
            "-w",
            str(workers),
            "-q",
        ]
    if lib == "celery":
        return [
            str(bin_dir / "celery"),
            "-A",
            "peer_celery",
            "worker",
            "--concurrency",
            str(workers),
            "--loglevel",
            "WARNING",
        ]
    raise SystemExit(f"unknown peer {lib!r}")


def _stat(pid: int) -> tuple[int, float] | None:
    """(parent pid, CPU seconds) of a live process, from /proc."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / TICKS


def tree_cpu(root: int) -> float:
    """CPU seconds used so far by ``root`` and every live process under it."""
    stats: dict[int, tuple[int, float]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = _stat(int(entry))
            if stat is not None:
                stats[int(entry)] = stat
    total, frontier = 0.0, [root]
    while frontier:
        pid = frontier.pop()
        if pid in stats:
            total += stats[pid][1]
        frontier += [child for child, (parent, _) in stats.items() if parent == pid]
    return total


def own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def measure(lib: str, redis_pid: int, workers: int, trips: int, jobs: int) -> dict[str, Any]:
    peer = importlib.import_module(f"peer_{lib}")
    env = {**os.environ, "PYTHONPATH": str(HERE)}
    proc = subprocess.Popen(
        worker_command(lib, workers),
        env=env,
        cwd=HERE,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
    )
    out: dict[str, Any] = {"version": importlib.import_module(lib).__version__}
    if lib == "huey":
        out["notify_result"] = peer.NOTIFY
    try:
        deadline = time.monotonic() + 60
        while True:  # the workers are up once a job comes back
            try:
                peer.wait(peer.submit())
                break
            except Exception:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise
                time.sleep(0.2)
        for _ in range(300):  # warm-up, as the app's rows have
            peer.wait(peer.submit())
        latencies = []
        for _ in range(trips):  # row (a): one at a time, submit to result
            started = time.perf_counter()
            peer.wait(peer.submit())
            latencies.append(time.perf_counter() - started)
        out["a"] = latencies
        cpu, workers_cpu, broker_cpu = own_cpu(), tree_cpu(proc.pid), tree_cpu(redis_pid)
        started = time.perf_counter()  # row (b): submit in a loop, then wait in order
        handles = [peer.submit() for _ in range(jobs)]
        for handle in handles:
            peer.wait(handle)
        out["b"] = jobs / (time.perf_counter() - started)
        out["b_cpu"] = {
            "client_cpu_ms_per_job": (own_cpu() - cpu) * 1000 / jobs,
            "worker_cpu_ms_per_job": (tree_cpu(proc.pid) - workers_cpu) * 1000 / jobs,
            "server_cpu_ms_per_job": (tree_cpu(redis_pid) - broker_cpu) * 1000 / jobs,
        }
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return out


def main(argv: list[str]) -> None:
    lib, url, redis_pid, workers, trips, jobs = argv
    # SIGTERM (the bench giving up on a run) unwinds, so the workers are stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    os.environ["GEARATTACH_PEER_REDIS"] = url
    sys.path.insert(0, str(HERE))
    figures = measure(lib, int(redis_pid), int(workers), int(trips), int(jobs))
    print(json.dumps(figures))


if __name__ == "__main__":
    main(sys.argv[1:])
