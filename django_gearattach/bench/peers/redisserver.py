"""A private redis-server for the peers: a free loopback port, no persistence."""

from __future__ import annotations

import shutil
import subprocess
import tempfile

from ...testing import free_port, wait_for_port


class RedisServer:
    """``redis-server --save '' --appendonly no`` on a free loopback port, stopped by pid."""

    def __init__(self) -> None:
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.directory = tempfile.TemporaryDirectory(prefix="gearattach-redis-")

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def __enter__(self) -> RedisServer:
        binary = find_redis_server()
        if binary is None:
            raise FileNotFoundError(
                "--peers needs redis-server for the peer queues: apt-get install redis-server"
            )
        self.process = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                self.directory.name,
            ],
            stdout=subprocess.DEVNULL,
        )
        wait_for_port(self.port, process=self.process)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.directory.cleanup()


def find_redis_server() -> str | None:
    return shutil.which("redis-server") or shutil.which("/usr/bin/redis-server")
