"""The app's columns: one e2e client process per database, and PostgreSQL scratch databases."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any
from urllib.parse import urlparse

# The database OPTIONS docs/deployment.rst recommends for throughput.
PREPARED = "server_side_binding=true&prepare_threshold=5"


def pg_database(url: str, suffix: str = "") -> tuple[str, str] | None:
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


def drop_pg(url: str, name: str) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def with_options(url: str, options: str) -> str:
    return url + ("&" if "?" in url else "?") + options if options else url


def e2e(
    url: str,
    server: str,
    jobs: int,
    window: int,
    workers: int,
    tracing: str = "",
    env: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Run :mod:`.e2e`'s client for one database; its figures."""
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
    extra = {**(env or {}), **({"GEARATTACH_BENCH_TRACING": tracing} if tracing else {})}
    full_env = {**os.environ, **extra} if extra else None
    out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True, env=full_env).stdout
    return json.loads(out.strip().splitlines()[-1])  # type: ignore[no-any-return]
