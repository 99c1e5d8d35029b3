"""A job's stream to many websockets: ``python -m django_gearattach.bench.streams_ws``.

One real worker process (:class:`~django_gearattach.worker.loop.Worker`, SQLite) runs a
task that streams ``--chunks`` chunks of ~20 bytes as fast as it can (each one is the
worker's clock when it called ``job.stream()``); one ASGI server process (uvicorn with
wsproto) relays them to ``--attachers`` websockets that this process opens first, with
a lean client. It measures, beside the targets of issue 22:

* delivery: every attacher got every chunk, in order, none twice;
* latency: from ``job.stream()`` (the worker's clock) to the attacher's frame, p50/p99;
* database statements per chunk, in the worker;
* replay: a websocket that joins after the end from the start, and one from chunk
  ``--chunks``/2 (``?after=R:N``): from its connect to its outcome.

The client and the server share the machine's cores with the worker: the latency
includes the client's own JSON decoding of every frame.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import signal
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import django
from django.conf import settings

from ..testing import Gearmand, free_port, wait_for_port, wait_for_workers

FUNCTION = "gearattach.bench.stream"
SECRET = "bench-streams-not-secret"
TEXT, CLOSE = 0x1, 0x8
QUERIES = {"count": 0}
TARGET_P99_MS = 50.0
TARGET_STATEMENTS = 0.05
TARGET_REPLAY_MS = 200.0


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
        ROOT_URLCONF="django_gearattach.urls",
        ALLOWED_HOSTS=["*"],
        USE_TZ=True,
        GEARATTACH={"SERVERS": [server], "STREAM_LIMIT_PER_CLIENT": 0},
        LOGGING_CONFIG=None,
    )
    django.setup()
    from django.db.backends.signals import connection_created

    def count(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        QUERIES["count"] += 1
        return execute(sql, params, many, context)

    def install(sender: Any, connection: Any, **kwargs: Any) -> None:
        if count not in connection.execute_wrappers:
            connection.execute_wrappers.append(count)

    connection_created.connect(install, weak=False)


def _task() -> Any:
    from ..tasks import JobContext, task

    @task(name=FUNCTION, bind=True)
    def stream(job: JobContext, count: int, gate: str) -> dict[str, int]:
        while not os.path.exists(gate):
            time.sleep(0.01)
        for _ in range(count):
            job.stream(f"{time.time():.6f}")
        return {"chunks": count}

    return stream


# -- the processes --------------------------------------------------------------------
def run_worker(db: str, server: str, report: str) -> None:
    configure(db, server)
    from ..gearman.rendezvous import Address
    from ..worker.loop import Worker

    worker = Worker([_task()], [Address.parse(server)])
    signal.signal(signal.SIGTERM, lambda *_: worker.stop())
    worker.run()
    Path(report).write_text(json.dumps({"queries": QUERIES["count"]}))


def serve(db: str, server: str, port: int) -> None:
    configure(db, server)
    import uvicorn
    from channels.routing import ProtocolTypeRouter, URLRouter
    from django.core.asgi import get_asgi_application

    from ..routing import websocket_urlpatterns

    app = ProtocolTypeRouter(
        {"http": get_asgi_application(), "websocket": URLRouter(websocket_urlpatterns)}
    )
    uvicorn_server = uvicorn.Server(
        uvicorn.Config(
            app, ws="wsproto", host="127.0.0.1", port=port, log_level="warning", lifespan="off"
        )
    )
    profile = os.environ.get("GEARATTACH_BENCH_PROFILE")
    if profile:  # CPU time per function of the server, for docs/streaming.rst
        import cProfile

        profiler = cProfile.Profile(time.process_time)
        profiler.runcall(uvicorn_server.run)
        profiler.dump_stats(profile)
    else:
        uvicorn_server.run()


# -- the client -----------------------------------------------------------------------
class Attacher(asyncio.Protocol):
    """One websocket: every chunk's seq and latency, until the outcome and the close."""

    def __init__(self, host: str, path: str) -> None:
        key = base64.b64encode(os.urandom(16)).decode()
        self.request = (
            f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
            f"Sec-WebSocket-Key: {key}\r\n\r\n"
        ).encode()
        self.buffer = bytearray()
        self.open = False
        self.seqs: list[tuple[int, int]] = []
        self.latencies: list[float] = []
        self.done_at: float | None = None
        self.opened = asyncio.get_running_loop().create_future()
        self.closed = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if not self.open:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            del self.buffer[: end + 4]
            self.open = True
            self.opened.set_result(None)
        buffer = self.buffer
        while len(buffer) >= 2:
            opcode, length, start = buffer[0] & 0x0F, buffer[1] & 0x7F, 2
            if length == 126:
                if len(buffer) < 4:
                    return
                (length,) = struct.unpack_from(">H", buffer, 2)
                start = 4
            elif length == 127:
                if len(buffer) < 10:
                    return
                (length,) = struct.unpack_from(">Q", buffer, 2)
                start = 10
            if len(buffer) < start + length:
                return
            payload = bytes(buffer[start : start + length])
            del buffer[: start + length]
            if opcode == TEXT:
                self.frame(json.loads(payload))
            elif opcode == CLOSE:
                self.transport.close()  # type: ignore[union-attr]

    def frame(self, message: dict[str, Any]) -> None:
        if message["type"] == "chunks":
            for chunk in message["chunks"]:
                self.frame(chunk)
        elif message["type"] == "chunk":
            self.seqs.append((message["run"], message["seq"]))
            self.latencies.append(time.time() - float(message["data"]))
        elif message["type"] in ("complete", "failed"):
            self.done_at = time.monotonic()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.opened.done():
            self.opened.set_exception(ConnectionError("closed before the handshake"))
        if not self.closed.done():
            self.closed.set_result(None)


async def attach(port: int, token: str, after: str = "") -> Attacher:
    path = f"/ws/gearattach/{token}/" + (f"?after={after}" if after else "")
    loop = asyncio.get_running_loop()
    _, attacher = await loop.create_connection(
        lambda: Attacher(f"127.0.0.1:{port}", path), "127.0.0.1", port
    )
    await attacher.opened
    return attacher


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if ordered else 0.0


async def _measure(
    port: int, token: str, attachers: int, chunks: int, gate: Path
) -> dict[str, Any]:
    sockets = [await attach(port, token) for _ in range(attachers)]
    await asyncio.sleep(1.0)  # the hub's attachment joins the job in gearmand
    started = time.monotonic()
    gate.touch()
    await asyncio.wait_for(asyncio.gather(*(s.closed for s in sockets)), 600)
    wall = time.monotonic() - started
    expected = [(sockets[0].seqs[0][0] if sockets[0].seqs else 1, n) for n in range(1, chunks + 1)]
    latencies = [x for s in sockets for x in s.latencies]
    return {
        "attachers": attachers,
        "chunks": chunks,
        "complete_in_order": sum(s.seqs == expected for s in sockets),
        "duplicates": sum(len(s.seqs) - len(set(s.seqs)) for s in sockets),
        "p50_ms": percentile(latencies, 0.5) * 1000,
        "p99_ms": percentile(latencies, 0.99) * 1000,
        "wall_s": wall,
        "run": expected[0][0],
    }


async def _replay(port: int, token: str, after: str, chunks: int) -> tuple[float, int]:
    begun = time.monotonic()
    socket = await attach(port, token, after)
    await asyncio.wait_for(socket.closed, 60)
    assert socket.done_at is not None, "the replay did not reach the outcome"
    return (socket.done_at - begun) * 1000, len(socket.seqs)


def run(attachers: int, chunks: int) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="gearattach-streams-"))
    db, gate, report = str(tmp / "bench.sqlite3"), tmp / "gate", tmp / "worker.json"
    me = [sys.executable, "-m", "django_gearattach.bench.streams_ws"]
    with Gearmand() as gearmand:
        configure(db, gearmand.address)
        from django.core.management import call_command

        from ..submission import submit
        from ..web.tokens import make_token

        call_command("migrate", verbosity=0)
        port = free_port()
        server = subprocess.Popen([*me, "serve", db, gearmand.address, str(port)])
        worker = subprocess.Popen([*me, "worker", db, gearmand.address, str(report)])
        try:
            wait_for_port(port, timeout=30, process=server)
            wait_for_workers(gearmand.address, FUNCTION, 1)
            job = submit(FUNCTION, [chunks, str(gate)], key="bench-stream")
            token = make_token(job.function, job.key, None)
            figures = asyncio.run(_measure(port, token, attachers, chunks, gate))
            half = f"{figures['run']}:{chunks // 2}"
            figures["late_join_ms"], figures["late_join_chunks"] = asyncio.run(
                _replay(port, token, half, chunks)
            )
            figures["reload_ms"], figures["reload_chunks"] = asyncio.run(
                _replay(port, token, "", chunks)
            )
        finally:
            worker.send_signal(signal.SIGTERM)
            server.terminate()
            worker.wait(30)
            server.wait(30)
    queries = json.loads(report.read_text())["queries"] if report.exists() else -1
    figures["statements_per_chunk"] = queries / chunks if queries >= 0 else float("nan")
    return figures


def report(f: dict[str, Any]) -> str:
    n = f["attachers"]
    return "\n".join(
        [
            f"One job streams {f['chunks']:,} chunks of ~20 bytes to {n} websocket attachers "
            f"(one uvicorn process, one worker process) in {f['wall_s']:.2f} s",
            f"  all chunks, in order, none twice  {f['complete_in_order']} of {n} attachers "
            f"({f['duplicates']} duplicates)            target: {n} of {n}",
            f"  stream() -> frame latency         p50 {f['p50_ms']:.1f} ms, p99 "
            f"{f['p99_ms']:.1f} ms            target: p99 <= {TARGET_P99_MS:.0f} ms",
            f"  statements per chunk (worker)     {f['statements_per_chunk']:.4f}"
            f"                       target: <= {TARGET_STATEMENTS}",
            f"  join at chunk {f['chunks'] // 2:,} after the end    {f['late_join_ms']:.0f} ms "
            f"({f['late_join_chunks']:,} chunks)       target: <= {TARGET_REPLAY_MS:.0f} ms",
            f"  reload after the end (all)        {f['reload_ms']:.0f} ms "
            f"({f['reload_chunks']:,} chunks)       target: <= {TARGET_REPLAY_MS:.0f} ms",
        ]
    )


def main(argv: list[str]) -> None:
    if argv and argv[0] == "serve":
        serve(argv[1], argv[2], int(argv[3]))
        return
    if argv and argv[0] == "worker":
        run_worker(argv[1], argv[2], argv[3])
        return
    parser = argparse.ArgumentParser(prog="python -m django_gearattach.bench.streams_ws")
    parser.add_argument("--attachers", type=int, default=100)
    parser.add_argument("--chunks", type=int, default=10_000)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON too")
    args = parser.parse_args(argv)
    figures = run(args.attachers, args.chunks)
    print(report(figures))
    if args.json:
        print(json.dumps(figures))


if __name__ == "__main__":
    main(sys.argv[1:])
