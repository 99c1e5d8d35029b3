"""Websocket fan-out: many browsers watching few jobs through one ASGI process.

``python -m django_gearattach.bench --fanout`` starts gearmand, one ASGI server
process (uvicorn by default, ``--server daphne`` for daphne) running the job
consumer, and opens ``--sockets`` websockets spread over ``--fanout-jobs`` jobs from
this process. A raw worker on our codec then holds every job until the server has
attached to it, and completes them one by one, each WORK_COMPLETE carrying the
moment it was sent. Reported: how many sockets got their outcome, the delivery
latency from WORK_COMPLETE to the websocket frame (p50, p99, max), the server's
resident memory per socket, and the gearmand connections the server holds.

The worker is raw (no database) so that the timestamp is taken exactly when
WORK_COMPLETE leaves; the real worker commits the record before that moment, which
is outside what this measures.
"""

from __future__ import annotations

import asyncio
import contextlib
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
        GEARATTACH={"SERVERS": [server]},
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

    from ..hub import get_hub

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
                # wsproto: about half the memory per socket of the websockets library.
                ws="wsproto",
                host="127.0.0.1",
                port=port,
                log_level="warning",
                lifespan="off",
                backlog=4096,
                ws_ping_interval=None,
            )
        ).run()


# -- the raw worker --------------------------------------------------------------------------
def raw_worker(gearmand_port: int, jobs: int, spacing: float) -> None:
    """Grab ``jobs`` jobs, wait until each has an attached client, complete them in turn."""
    from ..gearman.client import Client
    from ..gearman.protocol import Command, PacketParser, encode
    from ..gearman.routing import Address

    address = Address("127.0.0.1", gearmand_port)
    sock = socket.create_connection(("127.0.0.1", gearmand_port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    parser = PacketParser()
    sock.sendall(encode(Command.CAN_DO, FUNCTION) + encode(Command.GRAB_JOB_UNIQ))
    held: list[tuple[bytes, bytes]] = []
    while len(held) < jobs:
        data = sock.recv(65536)
        if not data:
            raise ConnectionError("gearmand closed the worker connection")
        parser.feed(data)
        for packet in parser.packets():
            if packet.command is Command.JOB_ASSIGN_UNIQ:
                held.append((packet.args[0], packet.args[2]))
                sock.sendall(encode(Command.WORK_STATUS, packet.args[0], 1, 2))
                if len(held) < jobs:
                    sock.sendall(encode(Command.GRAB_JOB_UNIQ))
            elif packet.command is Command.NO_JOB:
                sock.sendall(encode(Command.PRE_SLEEP))
            elif packet.command is Command.NOOP:
                sock.sendall(encode(Command.GRAB_JOB_UNIQ))
    client = Client(timeout=10)
    deadline = time.monotonic() + 60
    for _, unique in held:  # the ASGI process has joined every running job
        while client.status_unique(address, unique).clients < 1:
            if time.monotonic() > deadline:
                raise RuntimeError("the ASGI process did not attach to every job")
            time.sleep(0.01)
    time.sleep(0.2)
    for handle, _ in held:
        sock.sendall(encode(Command.WORK_COMPLETE, handle, json.dumps({"t": time.time()})))
        time.sleep(spacing)
    sock.close()


# -- the driver --------------------------------------------------------------------------------
async def _watch(url: str, latencies: list[float], opened: list[int]) -> None:
    from websockets.asyncio.client import connect

    async with connect(url, max_size=2**20, ping_interval=None, open_timeout=60) as ws:
        opened[0] += 1
        async for raw in ws:
            message = json.loads(raw)
            if message["type"] == "complete":
                latencies.append(time.time() - message["result"]["t"])
                return
            if message["type"] == "failed":
                return


async def _drive(
    port: int, tokens: list[str], sockets: int, gearmand_port: int, steady: bool
) -> dict[str, Any]:
    latencies: list[float] = []
    opened = [0]
    base = f"ws://127.0.0.1:{port}/ws/gearattach/"
    stats_url = f"http://127.0.0.1:{port}/stats/"

    def stats() -> dict[str, Any]:
        with urllib.request.urlopen(stats_url, timeout=10) as answer:
            return dict(json.loads(answer.read()))

    # Warm up: import and allocate what the first socket needs, then measure the base.
    await _watch_briefly(base + tokens[0] + "/")
    await asyncio.sleep(0.5)
    before = await asyncio.to_thread(stats)
    watchers = []
    for i in range(sockets):
        url = base + tokens[i % len(tokens)] + "/"
        watchers.append(asyncio.create_task(_watch(url, latencies, opened)))
        if i % 200 == 199:
            await asyncio.sleep(0.05)  # connect in waves, as browsers would
    deadline = time.monotonic() + 120
    while True:
        during = await asyncio.to_thread(stats)
        if during["subscribers"] >= sockets or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.2)
    await asyncio.sleep(1.0)
    if steady:
        stats_url += "?collect=1"
    during = await asyncio.to_thread(stats)
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "django_gearattach.bench.fanout",
            "worker",
            str(gearmand_port),
            str(len(tokens)),
            "0.02",
        ]
    )
    try:
        await asyncio.wait_for(asyncio.gather(*watchers, return_exceptions=True), 120)
    finally:
        worker.wait(60)
    return {"before": before, "during": during, "latencies": latencies, "opened": opened[0]}


async def _watch_briefly(url: str) -> None:
    from websockets.asyncio.client import connect

    async with connect(url, ping_interval=None) as ws:
        await ws.send('{"type": "ping"}')
        await ws.recv()


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


def run(sockets: int, jobs: int, kind: str, steady: bool) -> dict[str, Any]:
    raise_fd_limit()

    with tempfile.TemporaryDirectory() as tmp, Gearmand() as gearmand:
        db = f"{tmp}/fanout.sqlite3"
        configure(db, gearmand.address)
        from django.core.management import call_command

        from ..submission import submit
        from ..tokens import make_token

        call_command("migrate", verbosity=0)
        records = [submit(FUNCTION) for _ in range(jobs)]
        tokens = [make_token(FUNCTION, job.key, None) for job in records]
        port = free_port()
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "django_gearattach.bench.fanout",
                "serve",
                db,
                gearmand.address,
                str(port),
                kind,
            ]
        )
        try:
            wait_for_port(port, timeout=30, process=server)
            result = asyncio.run(_drive(port, tokens, sockets, gearmand.port, steady))
        finally:
            server.terminate()
            server.wait(30)
    latencies = result["latencies"]
    before, during = result["before"], result["during"]
    return {
        "server": kind,
        "steady": steady,
        "full_collection_ms": during["full_collection_ms"],
        "sockets": sockets,
        "jobs": jobs,
        "opened": result["opened"],
        "delivered": len(latencies),
        "p50_ms": percentile(latencies, 0.50) * 1000 if latencies else float("nan"),
        "p99_ms": percentile(latencies, 0.99) * 1000 if latencies else float("nan"),
        "max_ms": max(latencies) * 1000 if latencies else float("nan"),
        "subscribers": during["subscribers"],
        "channels": during["channels"],
        "rss_before_kb": before["rss_kb"],
        "rss_during_kb": during["rss_kb"],
        "kb_per_socket": (during["rss_kb"] - before["rss_kb"]) / sockets,
        "gearmand_connections": during["gearmand_connections"],
        "objects_per_socket": (during["gc_objects"] - before["gc_objects"]) / sockets,
    }


def report(figures: dict[str, Any]) -> str:
    state = (
        f"steady state (one full GC, {figures['full_collection_ms']:.0f} ms, before delivery)"
        if figures["steady"]
        else "fresh (the first full GC after the sockets opened may fall in delivery)"
    )
    lines = [
        f"websocket fan-out: {figures['sockets']} sockets over {figures['jobs']} jobs, "
        f"one {figures['server']} process, {state}",
        f"  sockets open and subscribed     {figures['subscribers']} "
        f"(hub channels: {figures['channels']})",
        f"  sockets that got the outcome    {figures['delivered']} of {figures['sockets']}",
        f"  WORK_COMPLETE -> frame latency  p50 {figures['p50_ms']:.1f} ms, "
        f"p99 {figures['p99_ms']:.1f} ms, max {figures['max_ms']:.1f} ms",
        f"  server RSS                      {figures['rss_before_kb'] / 1024:.1f} MiB -> "
        f"{figures['rss_during_kb'] / 1024:.1f} MiB, "
        f"{figures['kb_per_socket']:.1f} KiB and "
        f"{figures['objects_per_socket']:.0f} GC-tracked objects per socket",
        f"  gearmand connections held       {figures['gearmand_connections']} (1 server)",
    ]
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    role, *rest = argv
    if role == "serve":
        db, server, port, kind = rest
        serve(db, server, int(port), kind)
    elif role == "worker":
        port, jobs, spacing = rest
        raw_worker(int(port), int(jobs), float(spacing))
    else:
        sockets, jobs, kind, steady = rest
        print(json.dumps(run(int(sockets), int(jobs), kind, steady == "steady")))


if __name__ == "__main__":
    main(sys.argv[1:])
