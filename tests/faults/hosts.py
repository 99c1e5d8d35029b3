"""Simulated hosts: network namespaces on one bridge, and a private PostgreSQL cluster.

Each process started on a host gets that host's name (a UTS namespace of its own), as
workers on separate machines would have.

Every namespace and link is named ``gaf-...``; :func:`build` records what it made and
:func:`teardown` removes exactly that. The bridge lives in a namespace of its own
(``gaf-sw``), so the machine's own network is never touched. "Cutting" a host takes
its port on the bridge down: the host keeps its address and its sockets, and its
peers' packets to it vanish (a silent partition; no ``tc netem`` or iptables here).
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

PREFIX = "gaf-"
SWITCH = "gaf-sw"
BRIDGE = "gafbr0"
SUBNET = "10.213.7"
HOSTS = {
    "ctl": 250,  # the harness itself
    "g1": 1,  # gearmand
    "g2": 2,  # gearmand
    "w1": 11,  # gearworker
    "w2": 12,  # gearworker
    "c1": 21,  # submitter (scenario jobs and half of the load)
    "c2": 22,  # submitter (the other half of the load)
    "a1": 31,  # attacher
    "db": 40,  # PostgreSQL
}
PG_PORT = 5432


def ip(host: str) -> str:
    return f"{SUBNET}.{HOSTS[host]}"


def ns(host: str) -> str:
    return f"{PREFIX}{host}"


def sh(*args: str, check: bool = True, quiet: bool = False) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args,
        check=check,
        text=True,
        stdout=subprocess.PIPE if quiet else None,
        stderr=subprocess.PIPE if quiet else None,
    )


def existing_namespaces() -> list[str]:
    out = sh("ip", "netns", "list", quiet=True).stdout
    return [line.split()[0] for line in out.splitlines() if line.startswith(PREFIX)]


def pids(host: str) -> list[int]:
    out = sh("ip", "netns", "pids", ns(host), check=False, quiet=True).stdout
    return [int(p) for p in out.split()]


def kill_all(host: str, sig: int = signal.SIGKILL) -> int:
    """Send ``sig`` (SIGKILL) to every process in the host's namespace; how many there were.

    SIGSTOP freezes the host's processes (a long GC pause, a swapped VM, a frozen
    container), SIGCONT resumes them, SIGTERM asks them to stop (a deploy).
    """
    victims = pids(host)
    for pid in victims:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
    return len(victims)


def cut(host: str) -> None:
    """Take the host's port on the bridge down: its peers' packets vanish."""
    sh("ip", "-n", SWITCH, "link", "set", f"{PREFIX}{host}-s", "down")


def heal(host: str) -> None:
    sh("ip", "-n", SWITCH, "link", "set", f"{PREFIX}{host}-s", "up")


def exec_argv(host: str, argv: Iterable[str]) -> list[str]:
    return ["ip", "netns", "exec", ns(host), *argv]


def named(host: str, argv: Iterable[str]) -> list[str]:
    """``argv`` in a UTS namespace of its own whose host name is the host's (``gaf-w1``).

    Network namespaces share the machine's host name, and workers tell their own
    host's claims from others' by it (see "Fenced execution" in docs/attach.rst).
    """
    script = 'hostname "$1" && shift && exec "$@"'
    return ["unshare", "--uts", "--", "sh", "-c", script, "sh", ns(host), *argv]


@dataclass
class Network:
    made: list[str] = field(default_factory=list)

    def build(self) -> None:
        sh("ip", "netns", "add", SWITCH)
        self.made.append(SWITCH)
        sh("ip", "-n", SWITCH, "link", "add", BRIDGE, "type", "bridge")
        sh("ip", "-n", SWITCH, "link", "set", BRIDGE, "up")
        for host in HOSTS:
            name = ns(host)
            sh("ip", "netns", "add", name)
            self.made.append(name)
            inner, outer = f"{PREFIX}{host}", f"{PREFIX}{host}-s"
            # Made inside the host's namespace, so nothing ever appears in the machine's.
            sh("ip", "-n", name, "link", "add", inner, "type", "veth", "peer", "name", outer)
            sh("ip", "-n", name, "link", "set", outer, "netns", SWITCH)
            sh("ip", "-n", SWITCH, "link", "set", outer, "master", BRIDGE)
            sh("ip", "-n", SWITCH, "link", "set", outer, "up")
            sh("ip", "-n", name, "addr", "add", f"{ip(host)}/24", "dev", inner)
            sh("ip", "-n", name, "link", "set", inner, "up")
            sh("ip", "-n", name, "link", "set", "lo", "up")

    def teardown(self) -> None:
        for name in reversed(self.made):
            host = name.removeprefix(PREFIX)
            if host in HOSTS:
                kill_all(host)
            sh("ip", "netns", "del", name, check=False)
        self.made.clear()


def pg_bin() -> str:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        raise SystemExit("make faults needs PostgreSQL's initdb (apt-get install postgresql)")
    return os.path.dirname(found[-1])


@dataclass
class Postgres:
    """A throw-away cluster owned by the postgres user, listening on the db host only."""

    root: str
    made: bool = False

    @property
    def data(self) -> str:
        return os.path.join(self.root, "data")

    def _as_postgres(self, *argv: str, host: str | None = "db") -> None:
        cmd = ["runuser", "-u", "postgres", "--", *argv]
        subprocess.run(
            exec_argv(host, cmd) if host else cmd,
            check=True,
            cwd="/tmp",
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def init(self) -> None:
        os.makedirs(self.root)
        shutil.chown(self.root, "postgres", "postgres")
        self.made = True
        self._as_postgres(
            f"{pg_bin()}/initdb", "-D", self.data, "-A", "trust", "-U", "postgres", host=None
        )
        with open(os.path.join(self.data, "pg_hba.conf"), "a") as hba:
            hba.write(f"host all all {SUBNET}.0/24 trust\n")
        self.start()

    def start(self) -> None:
        options = (
            f"-c listen_addresses={ip('db')} -c port={PG_PORT} -k {self.root} "
            "-c max_connections=200 -c fsync=off -c synchronous_commit=off"
        )
        log = os.path.join(self.root, "postgres.log")
        self._as_postgres(
            f"{pg_bin()}/pg_ctl", "-D", self.data, "-l", log, "-o", options, "-w", "start"
        )

    def stop(self, mode: str = "fast") -> None:
        self._as_postgres(f"{pg_bin()}/pg_ctl", "-D", self.data, "-m", mode, "-w", "stop")

    def destroy(self) -> None:
        if not self.made:
            return
        with contextlib.suppress(subprocess.CalledProcessError):
            self.stop("immediate")
        time.sleep(0.2)
        shutil.rmtree(self.root, ignore_errors=True)
