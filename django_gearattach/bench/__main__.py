"""``python -m django_gearattach.bench``: raw floors and the app's rows, side by side.

One run measures the raw gearmand floors (no Django, no database), then, for SQLite
and for PostgreSQL (with and without prepared statements), the async throughput row
and the user-shaped rows (a)-(e) of :mod:`.shapes`, and prints one table with the
ratios between them. ``--fanout`` measures websocket fan-out instead, and ``--policies``
the key policies under load (:mod:`.policies`).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from typing import Any
from urllib.parse import urlparse

from ..testing import Gearmand
from .floor import measure_floor, measure_round_trip
from .report import report_table


def _pg_database(url: str, suffix: str = "") -> tuple[str, str] | None:
    """Create a scratch database next to ``url``'s; return (its url, its name)."""
    try:
        import psycopg
    except ImportError:
        return None
    parsed = urlparse(url)
    name = f"gearattach_bench_{os.getpid()}{suffix}"
    try:
        with psycopg.connect(url, autocommit=True, connect_timeout=3) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.Error as exc:
        print(f"PostgreSQL at {url} is not usable: {exc}", file=sys.stderr)
        return None
    return parsed._replace(path=f"/{name}").geturl(), name


# The database OPTIONS docs/deployment.rst recommends for throughput.
PREPARED = "server_side_binding=true&prepare_threshold=5"


def _drop_pg(url: str, name: str) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _e2e(
    url: str, server: str, jobs: int, window: int, workers: int, tracing: str = ""
) -> dict[str, Any]:
    cmd = [
        sys.executable,
        "-m",
        "django_gearattach.bench.e2e",
        "client",
        url,
        server,
        str(jobs),
        str(window),
        str(workers),
    ]
    env = {**os.environ, "GEARATTACH_BENCH_TRACING": tracing} if tracing else None
    out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True, env=env).stdout
    return json.loads(out.strip().splitlines()[-1])  # type: ignore[no-any-return]


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m django_gearattach.bench")
    parser.add_argument("--jobs", type=int, default=5000, help="jobs per measurement")
    parser.add_argument("--window", type=int, default=128, help="jobs in flight")
    parser.add_argument("--workers", type=int, default=2, help="worker processes")
    parser.add_argument(
        "--pg-url",
        default=os.environ.get("GEARATTACH_PG_URL", "postgres://postgres@127.0.0.1:5432/test"),
        help="a PostgreSQL database to create the scratch database next to",
    )
    parser.add_argument("--no-postgres", action="store_true")
    parser.add_argument(
        "--fanout",
        action="store_true",
        help="measure websocket fan-out instead: --sockets over --fanout-jobs on one ASGI process",
    )
    parser.add_argument(
        "--policies",
        action="store_true",
        help="measure the key policies instead: 1,000 triggers of a follow_up key, and "
        "1,000 requests of a stale shared page, from 8 processes (SQLite)",
    )
    parser.add_argument(
        "--tracing",
        action="store_true",
        help="the async row with tracing off, then on (OpenTelemetry's SDK, spans dropped)",
    )
    parser.add_argument(
        "--rounds", type=int, default=5, help="rounds of --jobs per side (--tracing)"
    )
    parser.add_argument(
        "--instructions",
        action="store_true",
        help="with --tracing: also count the instructions per job under valgrind's callgrind",
    )
    parser.add_argument("--sockets", type=int, default=2000, help="websockets (--fanout)")
    parser.add_argument("--fanout-jobs", type=int, default=100, help="jobs (--fanout)")
    parser.add_argument(
        "--server",
        choices=["uvicorn", "uvicorn-websockets", "daphne"],
        default="uvicorn",
        help="ASGI server (--fanout): uvicorn (wsproto), uvicorn-websockets (sansio), daphne",
    )
    args = parser.parse_args()
    import importlib.util

    if importlib.util.find_spec("dj_database_url") is None:
        print("the benchmark needs dj-database-url: pip install -e '.[test]'", file=sys.stderr)
        return 2
    if args.fanout:
        return _fanout(args.sockets, args.fanout_jobs, args.server)
    if args.policies:
        return _policies()
    if args.tracing:
        return _tracing(args)

    print(
        f"machine: {platform.node()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    )
    print(
        f"async row: {args.jobs} jobs, {args.window} in flight; {args.workers} worker processes\n"
    )
    columns: list[tuple[str, dict[str, Any] | None]] = []
    with Gearmand() as gearmand:
        floor = measure_floor(gearmand.port, args.jobs * 4, args.window, args.workers)
        trips = measure_round_trip(gearmand.port, 200, args.workers)
        with tempfile.TemporaryDirectory() as tmp:
            columns.append(
                (
                    "SQLite (WAL)",
                    _e2e(
                        f"sqlite:///{tmp}/bench.sqlite3",
                        gearmand.address,
                        args.jobs,
                        args.window,
                        args.workers,
                    ),
                )
            )
        if not args.no_postgres:
            for name, options in (("PG prepared", PREPARED), ("PG default", "")):
                scratch = _pg_database(args.pg_url)  # a fresh database per column
                if scratch is None:
                    columns.append((name, None))
                    continue
                try:
                    url = scratch[0]
                    if options:
                        url += ("&" if "?" in url else "?") + options
                    columns.append(
                        (name, _e2e(url, gearmand.address, args.jobs, args.window, args.workers))
                    )
                finally:
                    _drop_pg(args.pg_url, scratch[1])
    print(report_table(floor, trips, columns))
    return 0


def _policies() -> int:
    print(
        f"machine: {platform.node()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    )
    out = subprocess.run(
        [sys.executable, "-m", "django_gearattach.bench.policies", "main"],
        check=True,
        stdout=subprocess.PIPE,
        text=True,
    ).stdout
    *table, line = out.strip().splitlines()
    print("\n".join(table))
    figures = json.loads(line)
    exact = figures["coalescing"]["follow_ups"] == 1 and all(
        s["refreshes"] == 1 and s["stored"] == s["visitors"] for s in figures["stale"]
    )
    return 0 if exact else 1


def _tracing(args: argparse.Namespace) -> int:
    """The async row with the app's tracing off and on, interleaved in ``--rounds``
    rounds per database (:mod:`.tracing`)."""
    if importlib.util.find_spec("opentelemetry.sdk") is None:
        print("--tracing needs opentelemetry-sdk: pip install -e '.[test]'", file=sys.stderr)
        return 2
    from .e2e import CALLGRIND_ENV
    from .tracing import Side, compare, report

    if args.instructions:
        if shutil.which("valgrind") is None:
            print("--instructions needs valgrind: apt-get install valgrind", file=sys.stderr)
            return 2
        counts = tempfile.mkdtemp(prefix="gearattach-callgrind-")
        os.environ[CALLGRIND_ENV] = counts  # the client processes and their workers

    print(
        f"machine: {platform.node()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    )
    if args.instructions:
        print("instructions counted by valgrind's callgrind (CPU time under it says nothing)")
    print(
        f"{args.rounds} rounds of {args.jobs} jobs per side, {args.window} in flight; "
        f"{args.workers} worker processes per side; medians over the rounds\n"
    )
    columns: list[tuple[str, Side | None, Side | None]] = []
    with Gearmand() as one, Gearmand() as other, tempfile.TemporaryDirectory() as tmp:
        scratch: list[tuple[str, str]] = []
        urls = {"SQLite (WAL)": [f"sqlite:///{tmp}/{mode}.sqlite3" for mode in ("off", "on")]}
        if not args.no_postgres:
            for mode in ("off", "on"):
                made = _pg_database(args.pg_url, f"_{mode}")
                if made is not None:
                    scratch.append(made)
            if len(scratch) == 2:
                urls["PG prepared"] = [f"{url}?{PREPARED}" for url, _ in scratch]
        try:
            for name, (off_url, on_url) in urls.items():
                sides = [
                    Side(mode, url, server.address, args.workers, args.window)
                    for mode, url, server in (("sdk", off_url, one), ("on", on_url, other))
                ]
                try:
                    compare(sides[0], sides[1], args.rounds, args.jobs)
                finally:
                    for side in sides:
                        side.close()
                columns.append((name, sides[0], sides[1]))
        finally:
            for _, db in scratch:
                _drop_pg(args.pg_url, db)
    if not args.no_postgres and len(columns) == 1:
        columns.append(("PG prepared", None, None))
    print(report(columns, counted=args.instructions))
    if args.instructions:  # where the instructions tracing adds go
        from . import instructions

        figures = instructions.run()
        print("\n" + instructions.report(figures))
        shutil.rmtree(os.environ[CALLGRIND_ENV], ignore_errors=True)
    return 0


def _fanout(sockets: int, jobs: int, server: str) -> int:
    import importlib.util

    from .fanout import report

    needed = ["daphne"] if server == "daphne" else ["uvicorn"]
    needed += ["wsproto"] if server == "uvicorn" else []
    needed += ["websockets"] if server == "uvicorn-websockets" else []
    missing = [name for name in needed if importlib.util.find_spec(name) is None]
    if missing:
        print(f"--fanout needs {', '.join(missing)}: pip install -e '.[test]'", file=sys.stderr)
        return 2

    print(
        f"machine: {platform.node()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    )
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "django_gearattach.bench.fanout",
            "drive",
            str(sockets),
            str(jobs),
            server,
        ],
        check=True,
        stdout=subprocess.PIPE,
        text=True,
    ).stdout
    figures = json.loads(out.strip().splitlines()[-1])
    print(report(figures))
    delivered = figures["alone_delivered"] + figures["burst_delivered"]
    return 0 if delivered == sockets + 1 else 1


if __name__ == "__main__":
    sys.exit(main())
