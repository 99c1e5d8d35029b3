"""``python -m django_gearattach.bench``: raw floors and the app's rows, side by side.

One run measures the raw gearmand floors (no Django, no database), then, for SQLite
and for PostgreSQL (with and without prepared statements), the async throughput row
and the user-shaped rows (a)-(e) of :mod:`.shapes`, and prints one table with the
ratios between them. ``--fanout`` measures websocket fan-out instead, ``--policies``
the key policies under load (:mod:`.policies`), ``--streams`` one job's stream
(:mod:`.streams`; ``--streams-ws`` to websockets, :mod:`.streams_ws`), and
``--async`` one worker process running many ``async def`` jobs at once
(:mod:`.asyncjobs`). ``--peers`` runs rows (a) and (b) beside Dramatiq,
Huey and Celery (:mod:`.peers`), ``--profile`` says where a job's time goes.
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

from ..testing import Gearmand
from .columns import PREPARED, drop_pg, e2e, pg_database
from .floor import measure_floor, measure_round_trip
from .report import report_table


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m django_gearattach.bench")
    parser.add_argument("--jobs", type=int, default=5000, help="jobs per measurement")
    parser.add_argument("--window", type=int, default=128, help="jobs in flight")
    parser.add_argument("--workers", type=int, default=2, help="worker processes")
    parser.add_argument(
        "--pg-url",
        default=os.environ.get("GEARATTACH_PG_URL"),
        help="a PostgreSQL database to create the scratch database next to (default: "
        "$GEARATTACH_PG_URL, else postgres://postgres@127.0.0.1:5432/test; --peers and "
        "--profile measure PostgreSQL only when it is given)",
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
        "--streams",
        action="store_true",
        help="measure one job streaming 10,000 chunks instead, to --stream-attachers "
        "Python attachers (SQLite)",
    )
    parser.add_argument(
        "--stream-attachers", type=int, default=20, help="Python attachers (--streams)"
    )
    parser.add_argument(
        "--streams-ws",
        action="store_true",
        help="measure one job streaming 10,000 chunks to 100 websocket attachers through "
        "a real uvicorn instead (SQLite)",
    )
    parser.add_argument(
        "--tracing",
        action="store_true",
        help="the async row with tracing off, then on (OpenTelemetry's SDK, spans dropped)",
    )
    parser.add_argument(
        "--async",
        dest="async_jobs",
        action="store_true",
        help="measure async def tasks instead: one worker process runs --async-count jobs "
        "that each await asyncio.sleep(1) (wall time, memory per job in flight)",
    )
    parser.add_argument("--async-count", type=int, default=1000, help="jobs (--async)")
    parser.add_argument(
        "--async-db",
        metavar="URL",
        help="an existing, empty database for --async (default: SQLite in a temporary file)",
    )
    parser.add_argument(
        "--peers",
        action="store_true",
        help="rows (a) and (b) of this app beside Dramatiq, Huey and Celery on a private "
        "Redis, with the targets of issue 23 (the peers run in .venv-peers, created on first "
        "use from the 'bench' extra)",
    )
    parser.add_argument(
        "--peers-python",
        help="--peers: an interpreter that already has the 'bench' extra, instead of .venv-peers",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="where a job's time goes: row (b) on SQLite with the client and the workers "
        "under cProfile, per job and per phase",
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
    if args.peers:
        from .peers.run import main as peers

        return peers(args.peers_python, args.pg_url, args.workers, args.window)
    if args.profile:
        from .profiling import main as profile

        return profile(args.workers, args.window)
    if args.pg_url is None:
        args.pg_url = "postgres://postgres@127.0.0.1:5432/test"
    if args.fanout:
        return _fanout(args.sockets, args.fanout_jobs, args.server)
    if args.policies:
        return _policies()
    if args.streams:
        return _streams(args.stream_attachers)
    if args.streams_ws:
        from .streams_ws import main as streams_ws

        streams_ws([])
        return 0
    if args.async_jobs:
        from .asyncjobs import main as async_main

        print(
            f"machine: {platform.node()}, {os.cpu_count()} cores, "
            f"Python {platform.python_version()}"
        )
        return async_main(args.async_count, args.async_db)
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
                    e2e(
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
                scratch = pg_database(args.pg_url)  # a fresh database per column
                if scratch is None:
                    columns.append((name, None))
                    continue
                try:
                    url = scratch[0]
                    if options:
                        url += ("&" if "?" in url else "?") + options
                    columns.append(
                        (name, e2e(url, gearmand.address, args.jobs, args.window, args.workers))
                    )
                finally:
                    drop_pg(args.pg_url, scratch[1])
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


def _streams(attachers: int) -> int:
    print(
        f"machine: {platform.node()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    )
    out = subprocess.run(
        [sys.executable, "-m", "django_gearattach.bench.streams", "main", str(attachers)],
        check=True,
        stdout=subprocess.PIPE,
        text=True,
    ).stdout
    *table, line = out.strip().splitlines()
    print("\n".join(table))
    figures = json.loads(line)
    return 0 if figures["complete"] == figures["attachers"] else 1


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
                made = pg_database(args.pg_url, f"_{mode}")
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
                drop_pg(args.pg_url, db)
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
