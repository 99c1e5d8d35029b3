"""The fault suite (``make faults``; root, for network namespaces).

Builds the simulated hosts (see :mod:`tests.faults.hosts`): gearmand on g1 and g2,
``manage.py gearworker --concurrency 2`` on w1 and w2, submitters on c1 and c2, an
attacher on a1, and a private PostgreSQL cluster on db that every host reaches over
the bridge (w1 and w2 each through a TCP relay run by the harness, so that one host's
database can be cut while the other keeps its own). Then, while c1 and c2 submit
10,000 times over 1,000 keys, it runs each scenario in turn and prints one table:

    scenario | jobs | completed | lost | run twice | seconds to recover

*completed*: records ``complete`` when the row ends; *lost*: the others; *run twice*:
keys whose task body ran more than once (the body appends its key to a side log);
*seconds to recover*: from the fault until the row's last job finished ("never"
when some had not finished ``DEADLINE`` seconds after the fault ended).

The harness re-runs itself inside the ``gaf-ctl`` namespace (``--inside``) so that it
reaches the database over the bridge like every other host; the outer process builds
and, in a ``finally``, removes the namespaces and the cluster.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.dbproxy import DatabaseProxy
from tests.faults import hosts
from tests.faults.hosts import ip

ROOT = Path(__file__).resolve().parents[2]
FUNCTION = "faults.body"
GEARMAND_PORT = 4730
#: The worker hosts reach the database through TCP relays run by the harness (on ctl),
#: so that one worker host's database can be cut while the others keep theirs.
PROXY_PORTS = {"w1": 5433, "w2": 5434}
#: The workers' GEARATTACH["LEASE"] (the default): the pause and the long cut outlast it.
LEASE = 30.0
#: Seconds after a fault ends that a row waits for its jobs.
DEADLINE = 60.0
#: Seconds of quiet before the executions are counted (late copies of a job included).
QUIET = 5.0
#: Jobs per scenario row, and how long each task body sleeps.
JOBS = 200
BODY_SECONDS = 0.2
#: The attacher row's bodies are longer, so the jobs it follows are still queued.
ATTACHED_BODY_SECONDS = 0.3
#: The partition row: fewer, longer jobs (a partition matters to jobs that run).
PARTITION_JOBS, PARTITION_BODY_SECONDS = 40, 1.0
#: The limits row: few jobs of a concurrency=1 function, a body of a quarter second.
LIMITED_JOBS, LIMITED_BODY_SECONDS = 60, 0.25
#: The load: keys, submits of each key per submitter host, seconds it is spread over.
LOAD_KEYS, LOAD_ROUNDS, LOAD_SPAN = 1000, 5, 240.0


# --------------------------------------------------------------------------- outside


def outside(args: argparse.Namespace) -> int:
    if os.geteuid() != 0:
        raise SystemExit("make faults needs root (network namespaces): run it as root")
    for tool in ("ip", "runuser", "unshare"):
        if not shutil.which(tool):
            raise SystemExit(f"make faults needs {tool!r}")
    if not Path("/usr/sbin/gearmand").exists() and not shutil.which("gearmand"):
        raise SystemExit("make faults needs gearmand (make gearmand)")
    leftovers = hosts.existing_namespaces()
    if leftovers:
        raise SystemExit(
            f"namespaces {', '.join(leftovers)} exist: another fault run, or one that was "
            "killed. Delete them with `ip netns del NAME` once no run is going."
        )
    run_dir = Path(f"/tmp/gaf-run-{os.getpid()}")
    run_dir.mkdir()
    os.chmod(run_dir, 0o755)
    network = hosts.Network()
    postgres = hosts.Postgres(str(run_dir / "pg"))
    try:
        network.build()
        postgres.init()
        argv = [sys.executable, "-m", "tests.faults.run", "--inside", str(run_dir)]
        argv += ["--scale", str(args.scale)]
        return subprocess.run(hosts.exec_argv("ctl", argv), cwd=ROOT).returncode
    finally:
        postgres.destroy()
        network.teardown()
        print(f"logs: {run_dir}", file=sys.stderr)


# --------------------------------------------------------------------------- inside


def database_url() -> str:
    return f"postgres://postgres@{ip('db')}:{hosts.PG_PORT}/gaf"


@dataclass
class Cluster:
    run_dir: Path
    env: dict[str, str] = field(default_factory=dict)
    postgres: hosts.Postgres | None = None
    proxies: dict[str, DatabaseProxy] = field(default_factory=dict)
    workers: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "DJANGO_SETTINGS_MODULE": "tests.faults.settings",
            "DATABASE_URL": database_url(),
            "GEARATTACH_SERVERS": f"{ip('g1')}:{GEARMAND_PORT},{ip('g2')}:{GEARMAND_PORT}",
            "GAF_EXECUTIONS": str(self.run_dir / "executions.log"),
            "GEARATTACH_TEST_MEDIA": str(self.run_dir / "media"),
        }
        self.postgres = hosts.Postgres(str(self.run_dir / "pg"))

    def start_proxies(self) -> None:
        for host, port in PROXY_PORTS.items():
            relay = DatabaseProxy(ip("db"), hosts.PG_PORT, (ip("ctl"), port))
            self.proxies[host] = relay.start()

    def spawn(
        self, host: str, argv: list[str], log: str, env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        out = open(self.run_dir / log, "ab")  # noqa: SIM115 - the child owns it
        return subprocess.Popen(
            hosts.exec_argv(host, hosts.named(host, argv)),
            env={**self.env, "GAF_HOST": host, **(env or {})},
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def gearmand(self, host: str, sqlite: bool = False) -> None:
        argv = [
            "/usr/sbin/gearmand",
            f"--listen={ip(host)}",
            f"--port={GEARMAND_PORT}",
            "--round-robin",
            f"--log-file={self.run_dir / (host + '-gearmand.log')}",
            "--verbose=WARNING",
        ]
        if sqlite:
            argv += [
                "-q",
                "libsqlite3",
                f"--libsqlite3-db={self.run_dir / (host + '-queue.sqlite3')}",
            ]
        self.spawn(host, argv, f"{host}-gearmand.out")
        wait_for(lambda: admin(host, "version") is not None, 10, f"gearmand on {host}")

    def worker(self, host: str) -> None:
        argv = [sys.executable, "-m", "django", "gearworker", "--concurrency", "2"]
        env = None
        if host in self.proxies:
            env = {"DATABASE_URL": self.proxies[host].url(database_url())}
        self.workers[host] = self.spawn(host, argv, f"{host}-worker.log", env)

    def client(self, host: str, *argv: str) -> subprocess.Popen[bytes]:
        return self.spawn(
            host, [sys.executable, "-m", "tests.faults.client", *argv], f"{host}-client.log"
        )

    def workers_ready(self, count: int) -> None:
        wait_for(
            lambda: all(available_workers(g) >= count for g in ("g1", "g2")),
            60,
            f"{count} workers registered on both gearmand",
        )


def wait_for(predicate: Any, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.2)


def admin(host: str, command: str) -> list[str] | None:
    """A gearmand admin command's reply lines, or None when the server does not answer."""
    try:
        with socket.create_connection((ip(host), GEARMAND_PORT), timeout=1) as sock:
            sock.sendall(command.encode() + b"\n")
            data = b""
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
                if command == "version" or data.endswith(b".\n"):
                    break
    except OSError:
        return None
    return data.decode(errors="replace").splitlines()


def available_workers(host: str) -> int:
    for line in admin(host, "status") or []:
        parts = line.split("\t")
        if parts[0] == FUNCTION and len(parts) == 4:
            return int(parts[3])
    return 0


def statuses(prefix: str) -> dict[str, str]:
    """Each key's record status (keys ``prefix-N``); retried while the database is down."""
    from django.db import OperationalError, close_old_connections

    from django_gearattach.models import Job

    while True:
        try:
            rows = Job.objects.filter(key__startswith=f"{prefix}-")
            return dict(rows.values_list("key", "status"))
        except OperationalError:
            close_old_connections()
            time.sleep(0.2)


def executions(run_dir: Path, prefix: str) -> tuple[int, int]:
    """Keys of the row whose task body started twice or more, and ran to its end twice."""
    path = run_dir / "executions.log"
    lines = path.read_text().splitlines() if path.exists() else []
    counts = collections.Counter(
        tuple(line.split()[:2]) for line in lines if line.startswith(f"{prefix}-")
    )
    started = sum(1 for (_key, event), n in counts.items() if event == "start" and n > 1)
    ended = sum(1 for (_key, event), n in counts.items() if event == "end" and n > 1)
    return started, ended


def resubmitted(run_dir: Path, prefix: str) -> int:
    """Keys of the row that a worker's log says the recovery sweep resubmitted."""
    pattern = re.compile(rf"\[({re.escape(prefix)}-\d+)\].*resubmit")
    keys = set()
    for log in run_dir.glob("w*-worker.log"):
        for line in log.read_text(errors="replace").splitlines():
            found = pattern.search(line)
            if found:
                keys.add(found.group(1))
    return len(keys)


def keep_twice(run_dir: Path) -> None:
    """Copy the executions of every key that ran twice to ``twice.log`` (host, pid, time)."""
    lines = (run_dir / "executions.log").read_text().splitlines()
    starts = collections.Counter(line.split()[0] for line in lines if " start " in line)
    again = {key for key, n in starts.items() if n > 1}
    kept = sorted(line for line in lines if line.split()[0] in again)
    (run_dir / "twice.log").write_text("".join(f"{line}\n" for line in kept))


def snapshot(prefix: str) -> str:
    """The row's records by status, as a note (taken when the fault begins)."""
    states = collections.Counter(statuses(prefix).values())
    return "at the fault: " + ", ".join(f"{n} {s}" for s, n in sorted(states.items()))


@dataclass
class Row:
    scenario: str
    prefix: str
    jobs: int
    completed: int
    lost: int
    recover: str
    notes: list[str] = field(default_factory=list)
    twice: int = 0

    def count_executions(self, run_dir: Path) -> None:
        """Count the bodies run twice (once everything is quiet: late copies included)."""
        self.twice, ended_twice = executions(run_dir, self.prefix)
        if self.twice:
            self.notes.append(f"{ended_twice} of the {self.twice} run twice ran to the end twice")
        swept = resubmitted(run_dir, self.prefix)
        if swept:
            self.notes.append(f"the recovery sweep resubmitted {swept}")


FINISHED = {"complete", "failed", "lost"}


def settle(prefix: str, jobs: int, fault_start: float, fault_end: float) -> tuple[int, str]:
    """Wait for the row's jobs; (completed, seconds to recover)."""
    while True:
        states = statuses(prefix)
        done = sum(1 for s in states.values() if s in FINISHED)
        if len(states) == jobs and done == jobs:
            completed = sum(1 for s in states.values() if s == "complete")
            return completed, f"{time.monotonic() - fault_start:.1f}"
        if time.monotonic() > fault_end + DEADLINE:
            completed = sum(1 for s in states.values() if s == "complete")
            return completed, "never"
        time.sleep(0.25)


def row(
    cluster: Cluster, name: str, prefix: str, jobs: int, start: float, end: float, before: str
) -> Row:
    completed, recover = settle(prefix, jobs, start, end)
    states = statuses(prefix)
    others = collections.Counter(s for s in states.values() if s != "complete")
    notes = [before]
    notes += [f"{n} left {s}" for s, n in sorted(others.items())]
    if jobs > len(states):
        notes.append(f"{jobs - len(states)} without a record")
    return Row(name, prefix, jobs, completed, jobs - completed, recover, notes)


def submit_and_wait_for(
    cluster: Cluster, prefix: str, jobs: int, function: str = FUNCTION, seconds: float = 0.0
) -> None:
    """Submit the row's jobs from c1; return once all are submitted and some run."""
    seconds = seconds or BODY_SECONDS
    cluster.client("c1", "submit", prefix, str(jobs), str(seconds), function).wait(120)
    wait_for(
        lambda: sum(1 for s in statuses(prefix).values() if s != "queued") >= min(4, jobs),
        60,
        f"jobs of {prefix} to start",
    )


def scenario_baseline(cluster: Cluster, jobs: int) -> Row:
    """No fault: how long the row's own backlog takes to drain under the load."""
    prefix = "nf"
    submit_and_wait_for(cluster, prefix, jobs)
    before = snapshot(prefix).replace("at the fault", "when counting began")
    start = time.monotonic()
    return row(
        cluster, "no fault (the same jobs, for comparison)", prefix, jobs, start, start, before
    )


def scenario_worker_host(cluster: Cluster, jobs: int) -> Row:
    prefix = "wk"
    submit_and_wait_for(cluster, prefix, jobs)
    before = snapshot(prefix)
    start = time.monotonic()
    hosts.cut("w1")
    hosts.kill_all("w1")
    time.sleep(5)
    hosts.heal("w1")
    cluster.worker("w1")
    end = time.monotonic()
    result = row(
        cluster, "worker host killed (rebooted after 5 s)", prefix, jobs, start, end, before
    )
    cluster.workers_ready(4)
    return result


def scenario_gearmand_host(cluster: Cluster, jobs: int, sqlite: bool) -> Row:
    prefix = "gs" if sqlite else "gm"
    if sqlite:
        hosts.kill_all("g1")
        cluster.gearmand("g1", sqlite=True)
        cluster.workers_ready(4)
    submit_and_wait_for(cluster, prefix, jobs)
    before = snapshot(prefix)
    start = time.monotonic()
    hosts.cut("g1")
    hosts.kill_all("g1")
    time.sleep(2)
    hosts.heal("g1")
    cluster.gearmand("g1", sqlite=sqlite)
    end = time.monotonic()
    queue = "libsqlite3 queue" if sqlite else "memory queue"
    return row(cluster, f"gearmand host killed, {queue}", prefix, jobs, start, end, before)


def scenario_partition(cluster: Cluster, jobs: int) -> Row:
    prefix = "gp"
    # Bodies of a second, so copies revived elsewhere overlap the ones g1 still holds.
    cluster.client("c1", "submit", prefix, str(jobs), str(PARTITION_BODY_SECONDS)).wait(120)
    wait_for(
        lambda: sum(1 for s in statuses(prefix).values() if s != "queued") >= 4,
        60,
        f"jobs of {prefix} to start",
    )
    before = snapshot(prefix)
    start = time.monotonic()
    hosts.cut("g1")
    # Users keep following their jobs meanwhile: the attacher host attaches to every
    # job of the row while g1, which holds about half of them, does not answer.
    attacher = cluster.client("a1", "attach", prefix, "0", str(jobs))
    time.sleep(10)
    hosts.heal("g1")
    end = time.monotonic()
    name = "gearmand host partitioned 10 s, healed; a1 attaches to all"
    result = row(cluster, name, prefix, jobs, start, end, before)
    try:
        attacher.wait(30)
    except subprocess.TimeoutExpired:
        result.notes.append("the attacher had not returned 30 s after the row ended")
        hosts.kill_all("a1")
    return result


def scenario_postgres(cluster: Cluster, jobs: int) -> Row:
    prefix = "pg"
    assert cluster.postgres is not None
    submit_and_wait_for(cluster, prefix, jobs)
    before = snapshot(prefix)
    start = time.monotonic()
    cluster.postgres.stop("fast")
    time.sleep(5)
    cluster.postgres.start()
    end = time.monotonic()
    name = "PostgreSQL down 5 s (refusing connections)"
    return row(cluster, name, prefix, jobs, start, end, before)


def retried_other_than_once(prefix: str) -> int:
    """Records of the row (``faults.retrying``, which retries exactly once) whose
    ``retries`` is not 1: a retry recorded twice, or lost."""
    from django_gearattach.models import Job

    return Job.objects.filter(key__startswith=f"{prefix}-").exclude(retries=1).count()


def most_at_once(run_dir: Path, prefix: str) -> int:
    """The most task bodies of the row that ran at the same time (from the side log)."""
    path = run_dir / "executions.log"
    events = []
    for line in path.read_text().splitlines() if path.exists() else []:
        parts = line.split()
        if parts[0].startswith(f"{prefix}-") and parts[1] in ("start", "end"):
            events.append((float(parts[4]), parts[1] == "start"))
    running = most = 0
    for _, starts in sorted(events):
        running += 1 if starts else -1
        most = max(most, running)
    return most


def scenario_paused_worker(cluster: Cluster, jobs: int) -> Row:
    """w1's processes freeze past their lease while g1 restarts: the sweep resubmits
    the running jobs g1 lost, their copies run on w2, and then w1 resumes."""
    prefix = "ps"
    submit_and_wait_for(cluster, prefix, jobs, "faults.retrying")
    before = snapshot(prefix)
    start = time.monotonic()
    hosts.kill_all("w1", signal.SIGSTOP)
    hosts.kill_all("g1")
    cluster.gearmand("g1")
    time.sleep(LEASE + 5)
    hosts.kill_all("w1", signal.SIGCONT)
    end = time.monotonic()
    name = f"w1 frozen {LEASE + 5:.0f} s (SIGSTOP, past LEASE), g1 restarted; retrying jobs"
    result = row(cluster, name, prefix, jobs, start, end, before)
    result.notes.append(f"{retried_other_than_once(prefix)} recorded a retry count other than 1")
    return result


def scenario_database_cut(cluster: Cluster, jobs: int) -> Row:
    prefix = "dc"
    submit_and_wait_for(cluster, prefix, jobs)
    before = snapshot(prefix)
    start = time.monotonic()
    cluster.proxies["w1"].cut()
    time.sleep(10)
    cluster.proxies["w1"].heal()
    end = time.monotonic()
    name = "w1's database cut 10 s (the others keep theirs)"
    return row(cluster, name, prefix, jobs, start, end, before)


def scenario_limit_cut(cluster: Cluster, jobs: int) -> Row:
    """The one slot of a ``concurrency=1`` function is held by a worker host when that
    host loses its database for longer than the slot's lease: the other host takes the
    slot; the first must not run the function beside it once its database is back."""
    from django_gearattach.models import Throttle

    prefix = "lc"
    submit_and_wait_for(cluster, prefix, jobs, "faults.solo", LIMITED_BODY_SECONDS)
    holders = {host: f"{hosts.ns(host)}:" for host in cluster.proxies}

    def holding_host() -> str | None:
        slot = Throttle.objects.filter(function="faults.solo", slot=0).first()
        found = [h for h, name in holders.items() if slot and slot.holder.startswith(name)]
        return found[0] if found else None

    wait_for(lambda: holding_host() is not None, 60, "a worker host to hold the slot")
    holder = holding_host()
    assert holder is not None
    before = snapshot(prefix)
    start = time.monotonic()
    cluster.proxies[holder].cut()
    time.sleep(LEASE + 5)
    cluster.proxies[holder].heal()
    end = time.monotonic()
    name = f"concurrency=1 slot holder's database cut {LEASE + 5:.0f} s"
    result = row(cluster, name, prefix, jobs, start, end, before)
    result.notes.append(
        f"{holder} held the slot; most bodies at once: {most_at_once(cluster.run_dir, prefix)}"
    )
    return result


def scenario_deploy(cluster: Cluster, jobs: int) -> Row:
    prefix = "dp"
    submit_and_wait_for(cluster, prefix, jobs)
    before = snapshot(prefix)
    start = time.monotonic()
    hosts.kill_all("w1", signal.SIGTERM)
    supervisor = cluster.workers["w1"]
    wait_for(lambda: supervisor.poll() is not None, 60, "w1's workers to finish and exit")
    stopped = time.monotonic() - start
    cluster.worker("w1")
    end = time.monotonic()
    result = row(
        cluster,
        "w1 stopped by SIGTERM (a deploy), started again",
        prefix,
        jobs,
        start,
        end,
        before,
    )
    result.notes.append(f"w1's workers exited {stopped:.1f} s after SIGTERM")
    cluster.workers_ready(4)
    return result


def scenario_attacher(cluster: Cluster, jobs: int) -> Row:
    prefix = "at"
    attached = jobs // 2
    # Long enough bodies that the last half is still queued when the attacher dies.
    cluster.client("c1", "submit", prefix, str(jobs), str(ATTACHED_BODY_SECONDS))
    wait_for(lambda: len(statuses(prefix)) >= jobs, 60, f"the {jobs} records of {prefix}")
    cluster.client("a1", "attach", prefix, str(jobs - attached), str(attached))
    time.sleep(2)
    queued = sum(
        1
        for k, s in statuses(prefix).items()
        if s == "queued" and int(k.rsplit("-", 1)[1]) >= jobs - attached
    )
    before = f"{queued} of the {attached} attached jobs still queued; " + snapshot(prefix)
    start = time.monotonic()
    hosts.cut("a1")
    hosts.kill_all("a1")
    hosts.heal("a1")
    name = "attacher host killed following queued jobs"
    return row(cluster, name, prefix, jobs, start, start, before)


def inside(args: argparse.Namespace) -> int:
    import django

    run_dir = Path(args.inside)
    scale = args.scale
    jobs = max(20, int(JOBS * scale))
    load_keys = max(100, int(LOAD_KEYS * scale))
    cluster = Cluster(run_dir)
    os.environ.update(cluster.env)
    createdb = [f"{hosts.pg_bin()}/createdb", "-h", ip("db"), "-p", str(hosts.PG_PORT)]
    subprocess.run([*createdb, "-U", "postgres", "gaf"], check=True)
    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    cluster.start_proxies()
    for g in ("g1", "g2"):
        cluster.gearmand(g)
    for w in ("w1", "w2"):
        cluster.worker(w)
    cluster.workers_ready(4)
    began = time.monotonic()
    span = str(LOAD_SPAN * scale)
    loads = [
        cluster.client(c, "load", str(load_keys), str(LOAD_ROUNDS), span, str(seed))
        for seed, c in enumerate(("c1", "c2"))
    ]
    rows = []
    for run in (
        lambda: scenario_baseline(cluster, jobs),
        lambda: scenario_worker_host(cluster, jobs),
        lambda: scenario_gearmand_host(cluster, jobs, sqlite=False),
        lambda: scenario_gearmand_host(cluster, jobs, sqlite=True),
        lambda: scenario_partition(cluster, max(8, int(PARTITION_JOBS * scale))),
        lambda: scenario_postgres(cluster, jobs),
        lambda: scenario_attacher(cluster, jobs),
        lambda: scenario_paused_worker(cluster, jobs),
        lambda: scenario_database_cut(cluster, jobs),
        lambda: scenario_limit_cut(cluster, max(20, int(LIMITED_JOBS * scale))),
        lambda: scenario_deploy(cluster, jobs),
    ):
        rows.append(run())
        done = rows[-1]
        print(f"  {done.scenario}: {done.completed} of {done.jobs}", file=sys.stderr, flush=True)
    for load in loads:
        load.wait()
    load_end = time.monotonic()
    submits = 2 * load_keys * LOAD_ROUNDS
    completed, recover = settle("load", load_keys, load_end, load_end)
    recover = recover if recover == "never" else f"{time.monotonic() - load_end:.1f}"
    note = f"load ran {load_end - began:.0f} s; recovery counted from its last submit"
    rows.append(
        Row(
            f"{submits:,} submits over {load_keys:,} keys from c1 and c2, through all",
            "load",
            load_keys,
            completed,
            load_keys - completed,
            recover,
            [note],
        )
    )
    time.sleep(QUIET)
    for each in rows:
        each.count_executions(run_dir)
    print_table(rows)
    keep_twice(run_dir)
    print(f"\nwhole run: {time.monotonic() - began:.0f} s after set-up")
    print()
    for host in ("c1", "c2", "a1"):
        log = (run_dir / f"{host}-client.log").read_text(errors="replace")
        summaries = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
        submits = sum(summary["submits"] for summary in summaries)
        errors = sum(summary["errors"] for summary in summaries)
        first = next((e for summary in summaries for e in summary["first_errors"]), "")
        print(f"{host}: {submits} submits, {errors} retried after an error {first[:90]!r}")
    return 0


def print_table(rows: list[Row]) -> None:
    header = ("scenario", "jobs", "completed", "lost", "run twice", "seconds to recover")
    cells = [header] + [
        (r.scenario, str(r.jobs), str(r.completed), str(r.lost), str(r.twice), r.recover)
        for r in rows
    ]
    widths = [max(len(c[i]) for c in cells) for i in range(len(header))]
    for n, line in enumerate(cells):
        print(
            " | ".join(
                c.ljust(w) if i == 0 else c.rjust(w)
                for i, (c, w) in enumerate(zip(line, widths, strict=True))
            )
        )
        if n == 0:
            print("-+-".join("-" * w for w in widths))
    notes = [f"  {r.scenario}: {'; '.join(r.notes)}" for r in rows if r.notes]
    if notes:
        print("\nnotes:")
        print("\n".join(notes))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--inside", help=argparse.SUPPRESS)
    parser.add_argument(
        "--scale", type=float, default=1.0, help="Multiply job and key counts (default 1)."
    )
    args = parser.parse_args()
    return inside(args) if args.inside else outside(args)


if __name__ == "__main__":
    sys.exit(main())
