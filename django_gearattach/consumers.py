"""The websocket consumer: a browser follows one job, named by a signed token in the path.

The consumer is thin. It checks the token against the connection's user or session,
then relays the :mod:`~django_gearattach.hub`'s messages (already encoded once per
job, not once per socket) until the job's outcome, and closes with 1000.

Close codes: 4403 for a token that is forged, altered, expired or someone else's;
4404 for a job whose record no longer exists; 4429 when the client or this process
holds as many streams as :mod:`~django_gearattach.streams` allows; 1011 when
following the job failed (the widget reconnects); 1009 for an oversized frame. After
``GEARATTACH["STREAM_MAX_AGE"]`` seconds the socket gets ``{"type": "reconnect"}`` and
closes with 1000: the widget reconnects with its token, which is checked again.

The browser may send ``{"type": "ping"}`` (answered ``{"type": "pong"}``). Any other
frame is answered with ``{"type": "error", "error": "..."}`` and the socket stays
open.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncWebsocketConsumer

from .conf import conf
from .hub import BROKEN, MISSING, Subscription, get_hub
from .streams import Slot, StreamLimitReached, client_of, registry
from .tokens import Identity, TokenRefused, check_token
from .wire import RECONNECT

#: The largest frame a browser may send, in bytes; larger ones close the socket (1009).
MAX_FRAME_BYTES = 4096

CLOSE_FORBIDDEN = 4403
CLOSE_NOT_FOUND = 4404
CLOSE_TOO_MANY = 4429
CLOSE_TOO_BIG = 1009
CLOSE_ERROR = 1011


class JobConsumer(AsyncWebsocketConsumer):  # type: ignore[misc]
    """``ws/gearattach/<token>/``: the job's messages, then a normal close."""

    # The hub is in-process: no channel layer is needed, and not creating a layer
    # channel per socket keeps each socket small.
    channel_layer_alias = "gearattach-no-channel-layer"

    follower: asyncio.Task[None] | None = None
    slot: Slot | None = None
    summarised = False

    async def connect(self) -> None:
        """Accept, then check the token (close codes need an accepted socket)."""
        await self.accept()
        token = self.scope.get("url_route", {}).get("kwargs", {}).get("token", "")
        identity = Identity.of_scope(self.scope)
        try:
            ref = check_token(token, identity)
        except TokenRefused:
            await self.close(code=CLOSE_FORBIDDEN)
            return
        address = (self.scope.get("client") or [None])[0]
        try:
            self.slot = registry.open(client_of(identity, address))
        except StreamLimitReached as exc:
            await self.send_error(str(exc))
            await self.close(code=CLOSE_TOO_MANY)
            return
        self.summarised = ref.summary
        self.follower = asyncio.get_running_loop().create_task(self.follow(ref.function, ref.key))

    async def follow(self, function: str, key: str) -> None:
        """Relay the job's messages until its outcome, or until the stream's age is up."""
        async with get_hub().subscribe(function, key) as subscription:
            try:
                async with asyncio.timeout(conf.STREAM_MAX_AGE):
                    code = await self.relay(subscription)
            except TimeoutError:
                await self.send(text_data=RECONNECT)
                code = 1000
        await self.close(code=code)

    async def relay(self, subscription: Subscription) -> int:
        """Send each message; return the close code once the job has ended."""
        async for message in subscription:
            if message.type == MISSING:
                return CLOSE_NOT_FOUND
            if message.type == BROKEN:
                await self.send_error("cannot follow the job right now; retry shortly")
                return CLOSE_ERROR
            await self.send(text_data=message.for_reader(self.summarised)[1])
        return 1000

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        """Answer the browser's frames; a bad one gets an error message, not a close."""
        size = len(text_data.encode()) if text_data is not None else len(bytes_data or b"")
        if size > MAX_FRAME_BYTES:
            await self.send_error(f"frame too large: at most {MAX_FRAME_BYTES} bytes")
            await self.close(code=CLOSE_TOO_BIG)
            return
        if text_data is None:
            await self.send_error('send JSON text frames, e.g. {"type": "ping"}')
            return
        try:
            frame: Any = json.loads(text_data)
        except ValueError:
            await self.send_error('malformed frame: not JSON; send e.g. {"type": "ping"}')
            return
        if not isinstance(frame, dict) or frame.get("type") != "ping":
            kind = frame.get("type") if isinstance(frame, dict) else None
            await self.send_error(
                f"unknown message type {kind!r}: this socket only accepts "
                '{"type": "ping"}; job messages come from the server'
            )
            return
        await self.send(text_data='{"type":"pong"}')

    async def send_error(self, error: str) -> None:
        await self.send(text_data=json.dumps({"type": "error", "error": error}))

    async def websocket_disconnect(self, message: dict[str, Any]) -> None:
        """End the consumer without Channels' per-socket database clean-up hop.

        This consumer never touches the database itself (the hub reads records for all
        sockets), so the thread hop that would close this socket's connections is
        pure cost: thousands of sockets closing at a job's end would queue that many.
        """
        await self.disconnect(message.get("code", 1000))
        raise StopConsumer()

    async def disconnect(self, code: int) -> None:
        if self.slot is not None:
            self.slot.release()
        if self.follower is not None:
            self.follower.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.follower
