"""Real gearmand and worker processes for tests (ours, and our users' integration tests).

Nothing here mocks gearmand: :class:`Gearmand` starts the real server on a free
loopback port and stops it by pid; :class:`WorkerProcess` runs ``manage.py
gearworker`` against it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

INSTALL_HINT = (
    "gearmand was not found. Install it with "
    "'sudo apt-get install gearman-job-server gearman-tools' (Debian/Ubuntu), "
    "or set GEARMAND to its path."
)


class GearmandNotFound(RuntimeError):
    pass


def find_gearmand() -> str:
    """Path to gearmand (``$GEARMAND``, PATH, or /usr/sbin); raise with install advice."""
    candidates = [os.environ.get("GEARMAND"), shutil.which("gearmand"), "/usr/sbin/gearmand"]
    for path in candidates:
        if path and os.access(path, os.X_OK):
            return path
    raise GearmandNotFound(INSTALL_HINT)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(
    port: int, timeout: float = 10.0, process: subprocess.Popen[bytes] | None = None
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"process exited with {process.returncode} before listening")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


class Gearmand:
    """One gearmand on 127.0.0.1 with ``--round-robin``; ``extra_args`` are passed on."""

    def __init__(self, port: int | None = None, extra_args: Sequence[str] = ()) -> None:
        self.binary = find_gearmand()
        self.port = port or free_port()
        self.extra_args = list(extra_args)
        self.process: subprocess.Popen[bytes] | None = None
        self.log_dir = Path(tempfile.mkdtemp(prefix="gearmand-"))

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def start(self) -> Gearmand:
        cmd = [
            self.binary,
            "--round-robin",
            "--listen=127.0.0.1",
            f"--port={self.port}",
            "--threads=2",
            f"--log-file={self.log_dir / 'gearmand.log'}",
            "--verbose=ERROR",
            *self.extra_args,
        ]
        self.process = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            wait_for_port(self.port, process=self.process)
        except RuntimeError as exc:
            stderr = self.process.stderr.read().decode() if self.process.stderr else ""
            self.stop()
            raise RuntimeError(f"gearmand did not start: {exc}\n{stderr}") from None
        return self

    def stop(self, sig: int = signal.SIGTERM) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(sig)
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)

    def restart(self) -> None:
        self.stop()
        self.start()

    def __enter__(self) -> Gearmand:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
        shutil.rmtree(self.log_dir, ignore_errors=True)


class WorkerProcess:
    """``manage.py gearworker`` in a subprocess with the given environment."""

    def __init__(
        self,
        servers: Sequence[str],
        settings: str,
        env: dict[str, str] | None = None,
        args: Sequence[str] = (),
        cwd: str | None = None,
    ) -> None:
        self.cmd = [
            sys.executable,
            "-m",
            "django",
            "gearworker",
            f"--settings={settings}",
            *args,
        ]
        self.env = {**os.environ, **(env or {}), "GEARATTACH_SERVERS": ",".join(servers)}
        self.cwd = cwd
        self.process: subprocess.Popen[bytes] | None = None
        fd, self.log_path = tempfile.mkstemp(prefix="gearworker-", suffix=".log")
        self.log = os.fdopen(fd, "wb")

    def start(self) -> WorkerProcess:
        self.process = subprocess.Popen(
            self.cmd,
            env=self.env,
            cwd=self.cwd,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: cleanup reaches every child
        )
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def output(self) -> str:
        return Path(self.log_path).read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int | None:
        process = self.process
        if process is None:
            return None
        if process.poll() is None:
            process.send_signal(sig)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
        return process.returncode

    def cleanup(self) -> None:
        self.stop()
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
        self.log.close()
        os.unlink(self.log_path)


def wait_for_workers(address: str, function: str, count: int = 1, timeout: float = 20.0) -> None:
    """Block until gearmand reports ``count`` workers able to run ``function``."""
    from ..gearman.connection import admin_command
    from ..gearman.errors import GearmanError
    from ..gearman.protocol import parse_status
    from ..gearman.rendezvous import Address

    deadline = time.monotonic() + timeout
    seen = 0
    while time.monotonic() < deadline:
        try:
            for status in parse_status(admin_command(Address.parse(address), "status")):
                if status.function == function:
                    seen = status.workers
        except GearmanError:
            pass
        if seen >= count:
            return
        time.sleep(0.05)
    raise RuntimeError(f"{seen} of {count} workers for {function} on {address} after {timeout} s")
