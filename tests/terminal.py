"""Run a command with a real pseudo-terminal as its stdout, and read what it drew."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import struct
import subprocess
import termios
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[()][0-9A-Za-z]|\r")


@dataclass
class Screen:
    code: int
    raw: str  # with the escape sequences

    @property
    def text(self) -> str:
        """What a person read, without colours and cursor movements."""
        return ANSI.sub("", self.raw)


def run_in_terminal(
    cmd: list[str],
    env: dict[str, str],
    *,
    columns: int = 100,
    timeout: float = 60.0,
    while_running: Callable[[str], None] | None = None,
) -> Screen:
    """Run ``cmd`` with stdin, stdout and stderr on a pty of ``columns`` columns.

    ``while_running`` is called with the output so far, every 50 ms, until the
    command ends (a test opens a gate when the bar has appeared, for instance).
    """
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
    process = subprocess.Popen(
        cmd,
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env={**os.environ, **env, "TERM": "xterm-256color", "COLUMNS": str(columns)},
        cwd=ROOT,
        close_fds=True,
    )
    os.close(slave)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.05)
            if ready:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # EIO: the terminal's other side is closed
                    break
                if not chunk:
                    break
                chunks.append(chunk)
            elif process.poll() is not None:
                break
            if while_running is not None:
                while_running(b"".join(chunks).decode("utf-8", "replace"))
        else:
            raise AssertionError(f"{cmd} did not finish in {timeout} s")
        code = process.wait(10)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        os.close(master)
    return Screen(code, b"".join(chunks).decode("utf-8", "replace"))
