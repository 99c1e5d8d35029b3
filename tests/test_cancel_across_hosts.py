"""Cancelling reaches a worker on another host: through the database, not the network.

The worker, its gearmand and an attacher run in a network namespace of their own (a
simulated host, with its own loopback); this process cannot reach any of them over
the network. They share only the SQLite database file, which is how the cancel
request travels. (PostgreSQL at 127.0.0.1 is not reachable from inside the
namespace, so this test needs the SQLite run.)
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid

import pytest
from django.db import connection

from django_gearattach import cancel
from django_gearattach.models import Job, Status
from django_gearattach.operations import Cancel
from django_gearattach.testing import WorkerProcess

from .conftest import ROOT, executions
from .helpers import wait_for_status, wait_until

pytestmark = pytest.mark.django_db(transaction=True)

PORT = 4730


def _netns_usable() -> str:
    if os.environ.get("DATABASE_URL"):
        return "the namespace cannot reach the PostgreSQL server: runs with SQLite only"
    if os.geteuid() != 0 or shutil.which("ip") is None:
        return "needs root and iproute2 to make a network namespace"
    return ""


@pytest.fixture
def other_host():
    reason = _netns_usable()
    if reason:
        pytest.skip(reason)
    name = f"gat14-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    gearmand = None
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        gearmand = subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                name,
                "gearmand",
                "--round-robin",
                "--listen=127.0.0.1",
                f"--port={PORT}",
                "--threads=2",
                "--log-file=none",
                "--verbose=ERROR",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        yield name
    finally:
        if gearmand is not None:
            gearmand.terminate()
            gearmand.wait(10)
        subprocess.run(["ip", "netns", "delete", name], check=False)


def _env() -> dict[str, str]:
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "GEARATTACH_TEST_DATABASE": str(connection.settings_dict["NAME"]),
        "GEARATTACH_SERVERS": f"127.0.0.1:{PORT}",
    }


def _manage(namespace: str, *args: str) -> list[str]:
    return [
        "ip",
        "netns",
        "exec",
        namespace,
        sys.executable,
        "-m",
        "django",
        *args,
    ]


def test_a_cancel_reaches_the_worker_of_another_host_through_the_database(other_host, log_path):
    worker = WorkerProcess([f"127.0.0.1:{PORT}"], "tests.settings", env=_env(), cwd=str(ROOT))
    worker.cmd = ["ip", "netns", "exec", other_host, *worker.cmd]
    worker.start()
    try:
        key = f"across-{uuid.uuid4().hex[:8]}"
        submitted = subprocess.run(
            _manage(
                other_host,
                "gearattach",
                "submit",
                "tests.cancellable",
                "--key",
                key,
                "--args",
                json.dumps([str(log_path)]),
            ),
            env=_env(),
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert submitted.returncode == 0, submitted.stderr
        wait_for_status("tests.cancellable", key, Status.RUNNING, timeout=40)
        attacher = subprocess.Popen(
            _manage(other_host, "gearattach", "attach", "tests.cancellable", key, "--json"),
            env=_env(),
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert attacher.stdout is not None
        first = json.loads(attacher.stdout.readline())  # it follows the job's progress
        assert first["event"] == "status"
        # From this "host", which reaches neither that gearmand nor that worker:
        assert cancel("tests.cancellable", key).verdict is Cancel.REQUESTED
        out, err = attacher.communicate(timeout=60)
        last = json.loads(out.strip().splitlines()[-1])
        assert last["event"] == "failed", err
        record = wait_for_status("tests.cancellable", key, Status.CANCELLED)
        assert record.exception_qualname == "JobCancelled"
        assert executions(log_path)[1:] == ["cleaned-up"]
        # That host's gearmand forgot the job: nothing is queued or running there.
        status = subprocess.run(
            ["ip", "netns", "exec", other_host, "gearadmin", "-p", str(PORT), "--status"],
            capture_output=True,
            text=True,
            timeout=30,
        ).stdout
        line = next(x for x in status.splitlines() if x.startswith("tests.cancellable"))
        assert line.split("\t")[1:3] == ["0", "0"]
        wait_until(lambda: Job.objects.filter(key=key).count() == 1)
    finally:
        worker.cleanup()
