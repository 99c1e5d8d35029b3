#!/usr/bin/env python
"""Run the demo: migrate, then gearmand, ``gearworker`` and the ASGI server; Ctrl-C stops all.

Run from the repository root, in a virtualenv where django-gearattach is installed::

    python example_project/rundemo.py

It prints the site's URL and its admin's login (user ``admin``, a random password
made on the first run and kept in ``example_project/.demo/admin-password``).

``GEARATTACH_SERVERS``' first entry is the gearmand to use: one that already answers
there is reused, otherwise one is started if the address is local (127.0.0.1 or
localhost). ``DEMO_PORT`` (default 8000) is the web server's port on 127.0.0.1: uvicorn
serving ``example_project.asgi`` (HTTP and the live widget's websockets). Everything
else is read by settings.py (see README.md).

Children run in their own sessions, so a Ctrl-C reaches only this runner, which
stops them in order: the web server, then the workers (SIGTERM, so that they finish
the job in hand; a second Ctrl-C stops them at once), then gearmand.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
MANAGE = HERE / "manage.py"
STATE_DIR = HERE / ".demo"  # gearmand's log; ignored by git

TASK_NAME = "example.slow"
CONCURRENCY = 2
LOCAL_HOSTS = {"127.0.0.1", "localhost"}
STARTUP_TIMEOUT = 30.0
WORKER_GRACE = 30.0  # seconds the workers get to finish their jobs before SIGKILL
STOP_TIMEOUT = 5.0

# The package may be installed or used from this checkout.
sys.path.insert(0, str(ROOT))
from django_gearattach.gearman.connection import admin_command  # noqa: E402
from django_gearattach.gearman.errors import GearmanError  # noqa: E402
from django_gearattach.gearman.protocol import parse_status  # noqa: E402
from django_gearattach.gearman.rendezvous import Address  # noqa: E402
from django_gearattach.testing import GearmandNotFound, find_gearmand  # noqa: E402


class DemoError(Exception):
    """Startup or a child failed; the message says what to do."""


class Interrupted(Exception):
    """SIGINT or SIGTERM asked the demo to stop."""


def say(message: str) -> None:
    print(f"rundemo: {message}", file=sys.stderr, flush=True)


def _die_with_parent() -> None:
    # Linux only: should this runner be killed outright (SIGKILL), its children get
    # SIGTERM instead of living on with nobody to stop them.
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class Child:
    """One process the demo started, in its own session (process group)."""

    def __init__(
        self,
        name: str,
        cmd: list[str],
        stop_timeout: float = STOP_TIMEOUT,
        output: str = "its output above",
    ) -> None:
        self.name = name
        self.cmd = cmd
        self.stop_timeout = stop_timeout
        self.output = output
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Child:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.process = subprocess.Popen(
            self.cmd,
            cwd=ROOT,
            env=env,
            start_new_session=True,
            preexec_fn=_die_with_parent if sys.platform == "linux" else None,
        )
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def exited(self) -> int | None:
        """The exit status once the process has ended, else None."""
        return self.process.poll() if self.process is not None else None

    def signal(self, sig: int) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)

    def kill_group(self) -> None:
        """SIGKILL whatever is left in the child's process group (its forked workers)."""
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()


class Demo:
    def __init__(self) -> None:
        self.children: list[Child] = []
        self.signals = 0

    def on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.signals += 1

    # -- supervision -----------------------------------------------------------------
    def check(self) -> None:
        """Raise Interrupted after a signal, DemoError when a child died."""
        if self.signals:
            raise Interrupted
        for child in self.children:
            status = child.exited()
            if status is not None:
                raise DemoError(
                    f"{child.name} (pid {child.pid}) exited unexpectedly with status {status}; "
                    f"see {child.output}. Stopping the others."
                )

    def sleep(self, seconds: float) -> None:
        self.check()
        time.sleep(seconds)
        self.check()

    def spawn(self, child: Child) -> Child:
        self.children.append(child.start())
        return child

    # -- the steps ---------------------------------------------------------------------
    def run(self) -> None:
        servers = [s.strip() for s in os.environ.get("GEARATTACH_SERVERS", "").split(",")]
        servers = [s for s in servers if s] or ["127.0.0.1:4730"]
        try:
            addresses = [Address.parse(s) for s in servers]
        except ValueError as exc:
            raise DemoError(f"GEARATTACH_SERVERS: {exc}") from None
        web_port = demo_port()
        if not port_free(web_port):
            raise DemoError(
                f"port {web_port} on 127.0.0.1 is in use; stop what listens there or set "
                "DEMO_PORT to a free port"
            )
        server_command = asgi_server_command(web_port)
        gearmand_port = plan_gearmand(addresses[0])

        self.migrate()
        admin = self.admin_login()
        if gearmand_port is not None:
            self.start_gearmand(gearmand_port)
        for address in addresses[1:]:
            if gearmand_version(address) is None:
                say(
                    f"warning: no gearmand answers at {address} (in GEARATTACH_SERVERS); "
                    "jobs routed there fail over to the other servers"
                )
        manage = [sys.executable, str(MANAGE)]
        self.spawn(
            Child(
                "gearworker",
                [*manage, "gearworker", "--concurrency", str(CONCURRENCY)],
                stop_timeout=WORKER_GRACE,
            )
        )
        self.spawn(Child("web server", server_command))
        self.wait_ready(addresses[0], web_port)

        url = f"http://127.0.0.1:{web_port}/"
        say(f"the demo is running at {url}  (Ctrl-C stops everything)")
        user, _, password = admin.partition(" ")
        say(f"its admin is at {url}admin/  (user {user}, password {password})")
        while True:
            self.sleep(0.2)

    def migrate(self) -> None:
        child = self.spawn(Child("migrate", [sys.executable, str(MANAGE), "migrate", "--noinput"]))
        while (status := child.exited()) is None:
            if self.signals:
                raise Interrupted
            time.sleep(0.1)
        self.children.remove(child)
        if status != 0:
            raise DemoError(f"migrate failed with status {status}; see its output above")

    def admin_login(self) -> str:
        """The demo's admin login ("admin PASSWORD"), created on the first run."""
        if self.signals:
            raise Interrupted
        done = subprocess.run(
            [sys.executable, str(MANAGE), "demoadmin"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        if done.returncode != 0:
            raise DemoError(f"creating the admin login failed:\n{done.stderr}")
        return done.stdout.strip().splitlines()[-1]

    def start_gearmand(self, port: int) -> None:
        binary = find_gearmand()
        STATE_DIR.mkdir(exist_ok=True)
        log = STATE_DIR / "gearmand.log"
        cmd = [binary, "--round-robin", "--listen=127.0.0.1", f"--port={port}"]
        cmd += [f"--log-file={log}", "--verbose=ERROR"]
        child = self.spawn(Child("gearmand", cmd, output=str(log)))
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while not listening(port):
            if time.monotonic() > deadline:
                raise DemoError(f"gearmand did not listen on 127.0.0.1:{port}; see {log}")
            self.sleep(0.05)
        say(f"started gearmand (pid {child.pid}) on 127.0.0.1:{port}, log in {log}")

    def wait_ready(self, gearmand: Address, web_port: int) -> None:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while not listening(web_port):
            if time.monotonic() > deadline:
                raise DemoError(f"the web server did not listen on port {web_port} in time")
            self.sleep(0.1)
        while workers_for(gearmand, TASK_NAME) < CONCURRENCY:
            if time.monotonic() > deadline:
                raise DemoError(
                    f"no {TASK_NAME} workers registered with gearmand at {gearmand} in time"
                )
            self.sleep(0.1)

    # -- shutdown ----------------------------------------------------------------------
    def stop_all(self) -> None:
        """Stop the children, newest first: SIGTERM, then SIGKILL if they take too long."""
        signals_before = self.signals
        for child in reversed(self.children):
            if child.exited() is None:
                self.stop(child, signals_before)
            child.kill_group()  # also whatever the child left behind in its group
        self.children.clear()

    def stop(self, child: Child, signals_before: int) -> None:
        """SIGTERM ``child`` and wait; return early on timeout or on another Ctrl-C."""
        child.signal(signal.SIGTERM)
        started = time.monotonic()
        told = False
        while child.exited() is None:
            waited = time.monotonic() - started
            if waited > child.stop_timeout:
                say(f"{child.name} did not stop within {child.stop_timeout:.0f} s: killing it")
                return
            if self.signals > signals_before:
                say(f"killing {child.name}")
                return
            if not told and waited > 1:
                say(f"waiting for {child.name} to stop (Ctrl-C again to kill it)")
                told = True
            time.sleep(0.05)


# -- helpers ---------------------------------------------------------------------------
def asgi_server_command(port: int) -> list[str]:
    """uvicorn serving the project over HTTP and websockets (wsproto: lean per socket)."""
    missing = [name for name in ("uvicorn", "wsproto") if importlib.util.find_spec(name) is None]
    if missing:
        raise DemoError(
            f"{' and '.join(missing)} not installed: the demo's web server is uvicorn. Install "
            "it with: pip install 'django-gearattach[demo]' (make demo does)"
        )
    return [
        sys.executable,
        "-m",
        "uvicorn",
        "example_project.asgi:application",
        "--host=127.0.0.1",
        f"--port={port}",
        "--ws=wsproto",
        # The job consumer accepts frames of at most 4 KiB (consumers.MAX_FRAME_BYTES): let
        # uvicorn refuse larger ones before buffering them (its default is 16 MiB).
        "--ws-max-size=4096",
        "--lifespan=off",
        "--timeout-graceful-shutdown=3",
        "--no-access-log",
    ]


def demo_port() -> int:
    text = os.environ.get("DEMO_PORT", "8000").strip() or "8000"
    try:
        port = int(text)
    except ValueError:
        raise DemoError(f"DEMO_PORT={text!r} is not a port number") from None
    if not 0 < port < 65536:
        raise DemoError(f"DEMO_PORT={port} is out of range (1-65535)")
    return port


def port_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def listening(port: int, host: str = "127.0.0.1") -> bool:
    try:
        socket.create_connection((host, port), timeout=0.5).close()
    except OSError:
        return False
    return True


def gearmand_version(address: Address) -> str | None:
    """gearmand's version at ``address``; None if nothing listens there.

    Raises DemoError when something else listens there.
    """
    if not listening(address.port, address.host):
        return None
    try:
        reply = admin_command(address, "version", timeout=2.0)
    except GearmanError:
        reply = []
    if not reply or not reply[0].startswith("OK "):
        raise DemoError(
            f"{address} accepts connections but does not answer gearmand's admin 'version' "
            "command: something else listens there. Stop it, or point GEARATTACH_SERVERS at "
            "another port (e.g. 127.0.0.1:4731)"
        )
    return reply[0][3:]


def plan_gearmand(address: Address) -> int | None:
    """The port to start gearmand on, or None to reuse the one that answers."""
    version = gearmand_version(address)
    if version is not None:
        say(f"reusing gearmand {version} at {address}")
        return None
    if address.host not in LOCAL_HOSTS:
        raise DemoError(
            f"no gearmand answers at {address} (the first entry of GEARATTACH_SERVERS) and it "
            "is not a local address, so the demo cannot start one there. Start gearmand on "
            "that host, or unset GEARATTACH_SERVERS to use 127.0.0.1:4730."
        )
    if not port_free(address.port):
        raise DemoError(
            f"port {address.port} on 127.0.0.1 is taken; free it, or point GEARATTACH_SERVERS "
            "at another port (e.g. 127.0.0.1:4731)"
        )
    try:
        find_gearmand()
    except GearmandNotFound as exc:
        raise DemoError(str(exc)) from None
    return address.port


def workers_for(address: Address, function: str) -> int:
    try:
        lines = admin_command(address, "status", timeout=2.0)
    except GearmanError:
        return 0
    return sum(s.workers for s in parse_status(lines) if s.function == function)


def main() -> int:
    demo = Demo()
    signal.signal(signal.SIGINT, demo.on_signal)
    signal.signal(signal.SIGTERM, demo.on_signal)
    try:
        demo.run()
    except Interrupted:
        say("stopping")
        code = 0
    except DemoError as exc:
        say(str(exc))
        code = 1
    finally:
        demo.stop_all()
    say("stopped")
    return code


if __name__ == "__main__":
    sys.exit(main())
