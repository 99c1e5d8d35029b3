"""Websocket fan-out: many browsers watching few jobs through one ASGI process.

``python -m django_gearattach.bench --fanout`` starts gearmand, a raw worker (our
codec, no database) that takes every one of ``--fanout-jobs`` jobs and holds it
running, and one ASGI server process (uvicorn with wsproto by default) running the job
consumer. It then opens ``--sockets`` websockets spread over the jobs from this
process, with the lean client of :mod:`.wsclient`, and measures:

* memory: the server's resident memory per idle socket;
* alone: one job completes while every other socket idles: latency from its
  ``WORK_COMPLETE`` (the worker's clock, in the payload) to each of its watchers'
  frames;
* burst: every other job completes at once: the same latencies, the frames per
  second the server delivered, and the CPU seconds the server process and this
  client process spent on it, apart.
"""

from __future__ import annotations

import asyncio
import contextlib
import cProfile
import gc
import json
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import django
from django.conf import settings

from ..testing import Gearmand, free_port, wait_for_port

FUNCTION = "gearattach.bench.fanout"
COLLECTION_MS: list[float] = []
PROFILER = cProfile.Profile(time.process_time)
SECRET = "bench-fanout-not-secret"


def configure(db: str, server: str) -> None:
    settings.configure(
        SECRET_KEY=SECRET,
        INSTALLED_APPS=["django.contrib.contenttypes", "django.contrib.auth", "django_gearattach"],
        DATABASES={
            "default": {
                "ENGINE": "django.db.backends.sqlite3",
                "NAME": db,
                "OPTIONS": {"init_command": "PRAGMA journal_mode=WAL;", "timeout": 30},
            }
        },
        ROOT_URLCONF="django_gearattach.bench.fanout",
        ALLOWED_HOSTS=["*"],
        USE_TZ=True,
        # Every socket comes from this one client: the per-client and per-process
        # stream limits (20 and 2,000 by default) would refuse all but the first few.
        GEARATTACH={
            "SERVERS": [server],
            "STREAM_LIMIT_PER_CLIENT": 0,
            "STREAM_LIMIT_PER_PROCESS": 0,
        },
        LOGGING_CONFIG=None,
    )
    django.setup()


def raise_fd_limit() -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


# -- the server process -----------------------------------------------------------------
def rss_kb(pid: int | str = "self") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def connections_to(port: int, pid: int | str = "self") -> int:
    """The established TCP connections of process ``pid`` to local ``port``."""
    inodes = set()
    fd_dir = Path(f"/proc/{pid}/fd")
    for fd in fd_dir.iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    count = 0
    for table in ("tcp", "tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
                fields = line.split()
                remote_port = int(fields[2].rsplit(":", 1)[1], 16)
                if remote_port == port and fields[3] == "01" and fields[9] in inodes:
                    count += 1
    return count


async def stats_view(request: Any) -> Any:
    from django.http import JsonResponse

    from ..web.hub import get_hub

    profile = request.GET.get("profile")
    if profile == "on":  # GEARATTACH_BENCH_PROFILE=DIR: the burst's CPU profile
        PROFILER.enable()
    elif profile:
        PROFILER.disable()
        PROFILER.dump_stats(f"{profile}/fanout-server.prof")
    if request.GET.get("memory"):  # where idle sockets' memory goes: objects by type
        import collections
        import sys as _sys

        sizes: collections.Counter[str] = collections.Counter()
        counts: collections.Counter[str] = collections.Counter()
        for obj in gc.get_objects():
            name = f"{type(obj).__module__}.{type(obj).__qualname__}"
            counts[name] += 1
            sizes[name] += _sys.getsizeof(obj)
        return JsonResponse({"types": {n: [counts[n], sizes[n]] for n in counts}})
    if request.GET.get("collect"):
        # Steady state: a server that has held its sockets for a while has had a full
        # collection since they opened; a fresh one owes it, at the first busy moment.
        started = time.perf_counter()
        gc.collect()
        COLLECTION_MS.append((time.perf_counter() - started) * 1000)

    from ..conf import conf

    gearmand_port = conf.SERVERS[0].port
    return JsonResponse(
        {
            **get_hub().stats(),
            "rss_kb": rss_kb(),
            "gearmand_connections": connections_to(gearmand_port),
            "gc_objects": len(gc.get_objects()),
            "full_collection_ms": COLLECTION_MS[-1] if COLLECTION_MS else None,
        }
    )


def _urlpatterns() -> list[Any]:
    if not settings.configured:
        return []
    from django.urls import path

    return [path("stats/", stats_view)]


urlpatterns = _urlpatterns()


def application() -> Any:
    from channels.routing import ProtocolTypeRouter, URLRouter
    from django.core.asgi import get_asgi_application

    from ..routing import websocket_urlpatterns

    return ProtocolTypeRouter(
        {"http": get_asgi_application(), "websocket": URLRouter(websocket_urlpatterns)}
    )


def serve(db: str, server: str, port: int, kind: str) -> None:
    raise_fd_limit()

    configure(db, server)
    app = application()
    if kind == "daphne":
        from daphne.server import Server

        Server(
            application=app,
            endpoints=[f"tcp:port={port}:interface=127.0.0.1:backlog=4096"],
            verbosity=0,
        ).run()
    else:
        import uvicorn

        uvicorn.Server(
            uvicorn.Config(
                app,
                # wsproto: a third of the memory per socket of the websockets library.
                ws="websockets-sansio" if kind == "uvicorn-websockets" else "wsproto",
                host="127.0.0.1",
                port=port,
                log_level="warning",
                lifespan="off",
                backlog=4096,
                ws_ping_interval=None,
            )
        ).run()


# -- the raw worker --------------------------------------------------------------------------
def raw_worker(gearmand_port: int, jobs: int) -> None:
    """Take ``jobs`` jobs and hold them; on stdin ``one`` complete the first, ``rest`` the rest.

    Each WORK_COMPLETE carries the moment it was sent. ``held`` on stdout says every
    job is held.
    """
    from ..gearman.protocol import Command, PacketParser, encode

    sock = socket.create_connection(("127.0.0.1", gearmand_port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    parser = PacketParser()
    sock.sendall(encode(Command.CAN_DO, FUNCTION) + encode(Command.GRAB_JOB_UNIQ))
    held: list[bytes] = []
    while len(held) < jobs:
        data = sock.recv(65536)
        if not data:
            raise ConnectionError("gearmand closed the worker connection")
        parser.feed(data)
        for packet in parser.packets():
            if packet.command is Command.JOB_ASSIGN_UNIQ:
                held.append(packet.args[0])
                sock.sendall(encode(Command.WORK_DATA, packet.args[0], b""))  # started
                if len(held) < jobs:
                    sock.sendall(encode(Command.GRAB_JOB_UNIQ))
            elif packet.command is Command.NO_JOB:
                sock.sendall(encode(Command.PRE_SLEEP))
            elif packet.command is Command.NOOP:
                sock.sendall(encode(Command.GRAB_JOB_UNIQ))
    print("held", flush=True)

    def complete(handle: bytes) -> bytes:
        return encode(Command.WORK_COMPLETE, handle, json.dumps({"t": time.time()}))

    for line in sys.stdin:
        if line.strip() == "one":
            sock.sendall(complete(held[0]))
        elif line.strip() == "rest":
            sock.sendall(b"".join(complete(handle) for handle in held[1:]))
            break
    time.sleep(1)
    sock.close()


# -- the driver --------------------------------------------------------------------------------
def cpu_seconds_of(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class _Outcomes:
    """Arrival times and latencies of the outcome frames, per phase."""

    def __init__(self) -> None:
        self.arrivals: list[float] = []
        self.latencies: list[float] = []
        self.opened = 0
        self.done = asyncio.Event()
        self.expected = 0

    def opened_one(self) -> None:
        self.opened += 1

    def outcome(self, arrived: float, latency: float) -> None:
        self.arrivals.append(arrived)
        self.latencies.append(latency)
        if len(self.latencies) >= self.expected:
            self.done.set()

    def expect(self, count: int) -> tuple[list[float], list[float]]:
        self.arrivals, self.latencies = [], []
        self.expected = count
        self.done.clear()
        return self.arrivals, self.latencies


async def _drive(
    port: int, tokens: list[str], sockets: int, server_pid: int, worker: Any
) -> dict[str, Any]:
    from .wsclient import watch

    stats_url = f"http://127.0.0.1:{port}/stats/"

    def stats(query: str = "") -> dict[str, Any]:
        with urllib.request.urlopen(stats_url + query, timeout=120) as answer:
            return dict(json.loads(answer.read()))

    outcomes = _Outcomes()
    host, base = "127.0.0.1", "/ws/gearattach/"
    # Warm up: one socket imports and allocates what every socket needs.
    warm = asyncio.create_task(
        watch(host, port, base + tokens[0] + "/", outcomes.opened_one, outcomes.outcome)
    )
    await asyncio.sleep(1.0)
    before = await asyncio.to_thread(stats, "?collect=1")
    watchers = [warm]
    for i in range(sockets):
        path = base + tokens[i % len(tokens)] + "/"
        watchers.append(
            asyncio.create_task(watch(host, port, path, outcomes.opened_one, outcomes.outcome))
        )
        if i % 200 == 199:
            await asyncio.sleep(0.05)  # connect in waves (4,000 a second), as browsers would
    deadline = time.monotonic() + 300
    while True:
        during = await asyncio.to_thread(stats)
        if during["subscribers"] >= sockets + 1 or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.5)
    # Steady state: a server that has held its sockets for a while has collected them.
    during = await asyncio.to_thread(stats, "?collect=1")
    await asyncio.sleep(0.5)

    per_job = sockets // len(tokens) + (1 if sockets % len(tokens) else 0)
    arrivals, alone = outcomes.expect(per_job + 1)  # + the warm-up socket (job 0)
    sent = time.time()
    worker.stdin.write("one\n")
    worker.stdin.flush()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(outcomes.done.wait(), 30)
    await asyncio.sleep(1.0)

    rest = sockets + 1 - len(alone)
    arrivals, burst = outcomes.expect(rest)
    profile = os.environ.get("GEARATTACH_BENCH_PROFILE")
    if profile:
        await asyncio.to_thread(stats, "?profile=on")
    server_cpu, client_cpu = cpu_seconds_of(server_pid), own_cpu_seconds()
    sent = time.time()
    worker.stdin.write("rest\n")
    worker.stdin.flush()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(outcomes.done.wait(), 120)
    last = max(arrivals) if arrivals else sent
    server_cpu = cpu_seconds_of(server_pid) - server_cpu
    client_cpu = own_cpu_seconds() - client_cpu
    await asyncio.wait(watchers, timeout=30)
    if profile:
        await asyncio.to_thread(stats, f"?profile={profile}")
    return {
        "before": before,
        "during": during,
        "opened": outcomes.opened,
        "alone": alone,
        "burst": burst,
        "burst_seconds": last - sent,
        "burst_server_cpu": server_cpu,
        "burst_client_cpu": client_cpu,
    }


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


def run(sockets: int, jobs: int, kind: str) -> dict[str, Any]:
    raise_fd_limit()

    with tempfile.TemporaryDirectory() as tmp, Gearmand() as gearmand:
        db = f"{tmp}/fanout.sqlite3"
        configure(db, gearmand.address)
        from django.core.management import call_command

        from ..submission import submit
        from ..web.tokens import make_token

        call_command("migrate", verbosity=0)
        records = [submit(FUNCTION) for _ in range(jobs)]
        tokens = [make_token(FUNCTION, job.key, None) for job in records]
        module = [sys.executable, "-m", "django_gearattach.bench.fanout"]
        worker = subprocess.Popen(
            [*module, "worker", str(gearmand.port), str(jobs)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert worker.stdout is not None
        if worker.stdout.readline().strip() != "held":
            raise RuntimeError("the raw worker did not take every job")
        port = free_port()
        server = subprocess.Popen([*module, "serve", db, gearmand.address, str(port), kind])
        try:
            wait_for_port(port, timeout=30, process=server)
            result = asyncio.run(_drive(port, tokens, sockets, server.pid, worker))
        finally:
            server.terminate()
            server.wait(30)
            worker.kill()
            worker.wait(10)
    before, during = result["before"], result["during"]
    alone, burst = result["alone"], result["burst"]

    def ms(values: list[float], fraction: float) -> float:
        return percentile(values, fraction) * 1000 if values else float("nan")

    return {
        "server": kind,
        "sockets": sockets,
        "jobs": jobs,
        "opened": result["opened"],
        "subscribers": during["subscribers"] - 1,
        "feeds": during["feeds"],
        "full_collection_ms": during["full_collection_ms"],
        "rss_before_kb": before["rss_kb"],
        "rss_during_kb": during["rss_kb"],
        "kb_per_socket": (during["rss_kb"] - before["rss_kb"]) / sockets,
        "objects_per_socket": (during["gc_objects"] - before["gc_objects"]) / sockets,
        "gearmand_connections": during["gearmand_connections"],
        "alone_delivered": len(alone),
        "alone_expected": sockets // jobs + 1,
        "alone_p50_ms": ms(alone, 0.5),
        "alone_p99_ms": ms(alone, 0.99),
        "alone_max_ms": max(alone) * 1000 if alone else float("nan"),
        "burst_delivered": len(burst),
        "burst_expected": sockets + 1 - (sockets // jobs + 1),
        "burst_p50_ms": ms(burst, 0.5),
        "burst_p99_ms": ms(burst, 0.99),
        "burst_frames_per_s": len(burst) / result["burst_seconds"] if burst else 0.0,
        "burst_server_cpu_s": result["burst_server_cpu"],
        "burst_client_cpu_s": result["burst_client_cpu"],
    }


def report(figures: dict[str, Any]) -> str:
    collection = figures["full_collection_ms"]
    lines = [
        f"websocket fan-out: {figures['sockets']} sockets over {figures['jobs']} jobs, "
        f"one {figures['server']} process",
        f"  sockets open and subscribed     {figures['subscribers']} "
        f"(hub feeds: {figures['feeds']}; one full GC: {collection:.0f} ms)",
        f"  server RSS                      {figures['rss_before_kb'] / 1024:.1f} MiB -> "
        f"{figures['rss_during_kb'] / 1024:.1f} MiB: "
        f"{figures['kb_per_socket']:.1f} KiB and "
        f"{figures['objects_per_socket']:.0f} GC-tracked objects per idle socket",
        f"  gearmand connections held       {figures['gearmand_connections']} (1 server)",
        f"  alone: one job, its watchers    {figures['alone_delivered']} of "
        f"{figures['alone_expected']} delivered; WORK_COMPLETE -> frame p50 "
        f"{figures['alone_p50_ms']:.1f} ms, p99 {figures['alone_p99_ms']:.1f} ms, "
        f"max {figures['alone_max_ms']:.1f} ms",
        f"  burst: every other job at once  {figures['burst_delivered']} of "
        f"{figures['burst_expected']} delivered; p50 {figures['burst_p50_ms']:.0f} ms, "
        f"p99 {figures['burst_p99_ms']:.0f} ms; "
        f"{figures['burst_frames_per_s']:,.0f} frames/s",
        f"  burst CPU seconds               server {figures['burst_server_cpu_s']:.2f}, "
        f"benchmark client {figures['burst_client_cpu_s']:.2f}",
    ]
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    role, *rest = argv
    if role == "serve":
        db, server, port, kind = rest
        serve(db, server, int(port), kind)
    elif role == "worker":
        port, jobs = rest
        raw_worker(int(port), int(jobs))
    else:
        sockets, jobs, kind = rest
        print(json.dumps(run(int(sockets), int(jobs), kind)))


if __name__ == "__main__":
    main(sys.argv[1:])
