"""A TCP relay in front of PostgreSQL, to cut one worker's database and keep the others'.

The shared PostgreSQL server is never stopped: a worker whose ``DATABASE_URL`` points
at a :class:`DatabaseProxy` loses its database when the proxy is cut (every relayed
connection is closed and new ones are refused) and gets it back when it is healed.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from urllib.parse import urlsplit, urlunsplit


class DatabaseProxy:
    """An asyncio relay on ``listen`` (default 127.0.0.1, a free port) to ``host:port``,
    run in a thread."""

    def __init__(self, host: str, port: int, listen: tuple[str, int] = ("127.0.0.1", 0)) -> None:
        self.target = (host, port)
        self.listen = listen
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._cut = False
        #: Connections relayed so far (a worker reconnecting shows here).
        self.connections = 0
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def url(self, database_url: str) -> str:
        """``database_url`` with its host and port replaced by this proxy's."""
        parts = urlsplit(database_url)
        credentials = parts.netloc.rpartition("@")[0]
        here = f"{self.listen[0]}:{self.port}"
        netloc = f"{credentials}@{here}" if credentials else here
        return urlunsplit(parts._replace(netloc=netloc))

    def start(self) -> DatabaseProxy:
        self._thread.start()
        self._server = self._call(asyncio.start_server(self._relay, *self.listen))
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def cut(self) -> None:
        """Close every relayed connection and refuse new ones (they are closed at once)."""
        self._cut = True
        self._call(self._close_all())

    def heal(self) -> None:
        self._cut = False

    def close(self) -> None:
        self._cut = True
        self._call(self._shutdown())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()

    # -- the loop's side ------------------------------------------------------------------
    def _call(self, coroutine):
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(10)

    async def _close_all(self) -> None:
        for writer in list(self._writers):
            writer.close()
        self._writers.clear()

    async def _shutdown(self) -> None:
        await self._close_all()
        if self._server is not None:
            self._server.close()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._cut:
            writer.close()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        self.connections += 1
        self._writers |= {writer, up_writer}
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            self._writers.discard(writer)
            with contextlib.suppress(Exception):
                writer.close()
