"""A lean websocket client for the fan-out benchmark: many sockets, little CPU.

The benchmark's client shares the machine's cores with the server it measures, so it
must cost as little as possible per socket and per frame: one ``asyncio.Protocol``
per socket, the opening handshake written by hand, frames parsed only as far as
needed (server frames are not masked), JSON decoded only for the outcome. A socket
notes when its ``complete`` frame arrived and how late it was, answers the server's
close frame and closes.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import struct
import time
from collections.abc import Callable

CLOSE, TEXT = 0x8, 0x1


class Watcher(asyncio.Protocol):
    """One websocket following one job until its outcome."""

    def __init__(
        self,
        host: str,
        path: str,
        on_open: Callable[[], None],
        on_outcome: Callable[[float, float], None],
    ) -> None:
        self.request = (
            f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
            f"Sec-WebSocket-Key: {base64.b64encode(os.urandom(16)).decode()}\r\n\r\n"
        ).encode()
        self.on_open = on_open
        self.on_outcome = on_outcome
        self.buffer = bytearray()
        self.open = False
        self.transport: asyncio.Transport | None = None
        self.closed = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if not self.open:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            if not self.buffer.startswith(b"HTTP/1.1 101"):
                raise ConnectionError(bytes(self.buffer[:end]).decode(errors="replace"))
            del self.buffer[: end + 4]
            self.open = True
            self.on_open()
        self._frames()

    def _frames(self) -> None:
        buffer = self.buffer
        while len(buffer) >= 2:
            opcode, length = buffer[0] & 0x0F, buffer[1] & 0x7F
            start = 2
            if length == 126:
                if len(buffer) < 4:
                    return
                (length,) = struct.unpack_from(">H", buffer, 2)
                start = 4
            elif length == 127:
                if len(buffer) < 10:
                    return
                (length,) = struct.unpack_from(">Q", buffer, 2)
                start = 10
            if len(buffer) < start + length:
                return
            payload = bytes(buffer[start : start + length])
            del buffer[: start + length]
            if opcode == TEXT and b'"complete"' in payload:
                arrived = time.time()
                message = json.loads(payload)
                if message.get("type") == "complete":
                    self.on_outcome(arrived, arrived - message["result"]["t"])
            elif opcode == CLOSE:
                self._close(payload[:2] or b"\x03\xe8")

    def _close(self, code: bytes) -> None:
        assert self.transport is not None
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(code))
        self.transport.write(bytes([0x80 | CLOSE, 0x80 | len(code)]) + mask + masked)
        self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)


async def watch(
    host: str,
    port: int,
    path: str,
    on_open: Callable[[], None],
    on_outcome: Callable[[float, float], None],
) -> None:
    """Open one socket and wait until it is closed."""
    loop = asyncio.get_running_loop()
    _, protocol = await loop.create_connection(
        lambda: Watcher(f"{host}:{port}", path, on_open, on_outcome), host, port
    )
    await protocol.closed
