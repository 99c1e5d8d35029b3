"""``--peers``: the app's rows (a) and (b) and the same shapes on Dramatiq, Huey and Celery.

One gearmand and one private redis-server for the whole run; the systems are measured one
after the other, the app's columns interleaved with the peers' so that a change in the
machine's load falls on both, each with ``workers`` worker processes.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ...testing import Gearmand
from .. import peertable
from ..columns import PREPARED, drop_pg, e2e, pg_database, with_options
from ..e2e import ROWS_ENV, SERVER_PID_ENV
from .environment import PeersUnavailable, peers_python
from .redisserver import RedisServer, find_redis_server

DRIVER = Path(__file__).with_name("driver.py")
TRIPS, JOBS = 200, 2000  # as the app's rows (a) and (b)


def machine_line() -> str:
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return (
        f"machine: {platform.node()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}, load average {load}; "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}"
    )


def run_peer(python: str, lib: str, redis: RedisServer, workers: int) -> dict[str, Any]:
    """One peer through :mod:`.driver` in the peers' interpreter; its figures."""
    command = [python, str(DRIVER), lib, redis.url, str(redis.pid), str(workers), str(TRIPS)]
    with tempfile.TemporaryFile("w+") as log:
        driver = subprocess.Popen(
            [*command, str(JOBS)], stdout=subprocess.PIPE, stderr=log, text=True
        )
        try:
            out, _ = driver.communicate(timeout=900)
        except subprocess.TimeoutExpired:
            driver.terminate()  # the driver stops the workers it started, then exits
            driver.communicate(timeout=60)
            raise RuntimeError(f"{lib} did not finish in 900 s") from None
        if driver.returncode != 0:
            log.seek(0)
            tail = "\n".join(log.read().splitlines()[-15:])
            raise RuntimeError(f"{lib} failed (exit {driver.returncode}):\n{tail}")
    return json.loads(out.strip().splitlines()[-1])  # type: ignore[no-any-return]


def main(explicit_python: str | None, pg_url: str | None, workers: int, window: int) -> int:
    try:
        python = peers_python(explicit_python)
    except PeersUnavailable as exc:
        print(exc, file=sys.stderr)
        return 2
    if find_redis_server() is None:
        print(
            "--peers needs redis-server for the peer queues: apt-get install redis-server",
            file=sys.stderr,
        )
        return 2
    print(machine_line())
    print(
        f"rows (a) {TRIPS} jobs one at a time and (b) {JOBS:,} no-op jobs, "
        f"{workers} worker processes each\n"
    )
    results: peertable.Results = {}
    with Gearmand() as gearmand, RedisServer() as redis, tempfile.TemporaryDirectory() as tmp:
        env = {ROWS_ENV: "ab", SERVER_PID_ENV: str(gearmand.pid)}

        def ours(url: str) -> dict[str, Any]:
            return e2e(url, gearmand.address, JOBS, window, workers, env=env)

        def on_pg(options: str) -> Callable[[], dict[str, Any] | None]:
            def measure() -> dict[str, Any] | None:
                assert pg_url is not None
                scratch = pg_database(pg_url)
                if scratch is None:
                    return None
                try:
                    return ours(with_options(scratch[0], options))
                finally:
                    drop_pg(pg_url, scratch[1])

            return measure

        def peer(lib: str) -> Callable[[], dict[str, Any]]:
            return lambda: run_peer(python, lib, redis, workers)

        plan: list[tuple[str, Callable[[], dict[str, Any] | None]]] = [
            (peertable.SQLITE, lambda: ours(f"sqlite:///{tmp}/bench.sqlite3")),
            (peertable.DRAMATIQ, peer("dramatiq")),
            (peertable.HUEY, peer("huey")),
        ]
        if pg_url:
            plan.append((peertable.PG_PREPARED, on_pg(PREPARED)))
        plan.append((peertable.CELERY, peer("celery")))
        if pg_url:
            plan.append((peertable.PG_DEFAULT, on_pg("")))
        for name, measure in plan:
            print(f"  measuring {name} ...", flush=True)
            try:
                results[name] = measure()
            except (RuntimeError, subprocess.SubprocessError) as exc:
                print(f"  {name} NOT RUN: {exc}", flush=True)
                results[name] = None
    print()
    print(peertable.peers_table(results))
    return 0
