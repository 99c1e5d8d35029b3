"""The websocket consumer: a browser follows one job, named by a signed token in the path.

The consumer is thin. It checks the token against the connection's user or session,
then relays the :mod:`~django_gearattach.web.hub`'s messages (already encoded once per
job, not once per socket) until the job's outcome, and closes with 1000. The hub calls
it back with each message; a socket has no task of its own while nothing happens.

``?after=R:N`` in the connect URL resumes the job's stream after the chunk the browser
holds (see :mod:`~django_gearattach.web.replay`).

Close codes: 4400 for a malformed ``after`` position; 4403 for a token that is forged,
altered, expired or someone else's;
4404 for a job whose record no longer exists, or holds a later run than the token's;
4429 when the client or this process holds as many streams as
:mod:`~django_gearattach.web.streams` allows; 1011 when following the job failed (the
widget reconnects); 1009 for an oversized frame. After
``GEARATTACH["STREAM_MAX_AGE"]`` seconds the socket gets ``{"type": "reconnect"}`` and
closes with 1000: the widget reconnects with its token, which is checked again.

Chunks of a job's stream that are waiting for the socket together (a fast stream, a
replay) leave in one frame, ``{"type": "chunks", "chunks": [chunk, ...]}``, each one the
``chunk`` message it would have been on its own (at most :data:`CHUNKS_PER_FRAME`): a
frame costs the server far more than its bytes.

The browser may send ``{"type": "ping"}`` (answered ``{"type": "pong"}``). Any other
frame is answered with ``{"type": "error", "error": "..."}`` and the socket stays
open.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs

from channels.consumer import get_handler_name
from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings

from ..conf import conf
from .hub import get_hub
from .messages import BROKEN, CANNOT_FOLLOW, MISSING, PONG, RECONNECT, Message, error_frame
from .positions import BAD_POSITION, START, parse_position
from .streams import Slot, StreamLimitReached, client_of, registry
from .tokens import Identity, TokenRefused, check_token

logger = logging.getLogger("django_gearattach.web.consumers")

#: The largest frame a browser may send, in bytes; larger ones close the socket (1009).
MAX_FRAME_BYTES = 4096

#: The most chunks sent in one frame.
CHUNKS_PER_FRAME = 512

CLOSE_BAD_REQUEST = 4400
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

    #: Stops the hub's deliveries to this socket.
    stop_listening: Callable[[], None] | None = None
    #: Messages delivered by the hub, not sent yet, and the task sending them: an idle
    #: socket has neither (no task and no queue per socket while nothing happens).
    outbox: list[Message] | None = None
    sender: asyncio.Task[None] | None = None
    #: This socket's place in the stream limits, and the end of its maximum age.
    slot: Slot | None = None
    expiry: asyncio.TimerHandle | None = None
    #: A summary token (the admin's): outcomes without the offloaded user's page.
    summarised = False

    async def connect(self) -> None:
        """Accept, then check the token (close codes need an accepted socket)."""
        await self.accept()
        query = parse_qs(self.scope.get("query_string", b"").decode("latin-1"))
        after = parse_position(query.get("after", [""])[-1])
        if after is None:
            await self.send_error(BAD_POSITION)
            await self.close(code=CLOSE_BAD_REQUEST)
            return
        token = self.scope.get("url_route", {}).get("kwargs", {}).get("token", "")
        identity = Identity.of_scope(self.scope)
        try:
            ref = check_token(token, identity)
        except TokenRefused as refusal:
            if settings.DEBUG and refusal.reason:  # which check: the developer's eyes only
                await self.send_error(f"{refusal} ({refusal.reason})")
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
        hub = get_hub()
        record = None
        # A position needs the record too: a new feed then reads only the chunks after it.
        if ref.run is not None or after != START:
            record = await hub.record(ref.function, ref.key)
        # A run token follows only the run it was issued for.
        if ref.run is not None and (record is None or not ref.names(record)):
            self.slot.release()
            await self.close(code=CLOSE_NOT_FOUND)
            return
        loop = asyncio.get_running_loop()
        self.expiry = loop.call_later(conf.STREAM_MAX_AGE, self.expire)
        self.stop_listening = hub.listen(
            ref.function, ref.key, self.deliver, record=record, after=after, summarised=ref.summary
        )

    def expire(self) -> None:
        """The stream's maximum age: say so, and close (the widget reconnects at once)."""
        self.expiry = None
        if self.stop_listening is None:
            return  # the outcome is on its way out already
        self.stop()
        task = asyncio.get_running_loop().create_task(self.say_reconnect())
        self.sender = self.sender or task

    async def say_reconnect(self) -> None:
        try:
            await self.base_send({"type": "websocket.send", "text": RECONNECT})
            await self.close(code=1000)
        except Exception as exc:  # the browser went away meanwhile
            logger.debug("socket closed while ending it: %s", exc)

    def deliver(self, message: Message) -> None:
        """The hub's callback: queue the message and make sure a task sends it."""
        if self.outbox is None:
            self.outbox = []
        self.outbox.append(message)
        if self.sender is None:
            self.sender = asyncio.get_running_loop().create_task(self.send_outbox())

    async def send_outbox(self) -> None:
        """Relay the delivered messages in order; close when the job has ended."""
        try:
            while self.outbox:
                if len(self.outbox) > 1 and self.outbox[0].type == "chunk":
                    await self.base_send({"type": "websocket.send", "text": self._chunks()})
                    continue
                message = self.outbox.pop(0)
                if message.type == MISSING:
                    self.stop()
                    await self.close(code=CLOSE_NOT_FOUND)
                    return
                if message.type == BROKEN:
                    self.stop()
                    await self.send_error(CANNOT_FOLLOW)
                    await self.close(code=CLOSE_ERROR)
                    return
                # The ASGI send itself: Channels' two layers of send() above it cost as
                # much as the frame when thousands of sockets get one at once.
                text = message.for_reader(self.summarised)[1]
                await self.base_send({"type": "websocket.send", "text": text})
                if message.final:
                    self.stop()
                    # Close on the event loop's next turn: when one job's end reaches
                    # thousands of sockets, every outcome frame leaves before any
                    # closing handshake takes the process's time.
                    await asyncio.sleep(0)
                    await self.close(code=1000)
                    return
        except Exception as exc:  # the browser went away meanwhile: nothing to tell it
            logger.debug("socket closed while sending to it: %s", exc)
            self.stop()
        finally:
            self.sender = None

    def _chunks(self) -> str:
        """The chunks at the head of the outbox, taken out, as one frame."""
        outbox = self.outbox
        assert outbox is not None
        count = 0
        while count < min(len(outbox), CHUNKS_PER_FRAME) and outbox[count].type == "chunk":
            count += 1
        batch = outbox[:count]
        del outbox[:count]
        return '{"type":"chunks","chunks":[' + ",".join(m.text for m in batch) + "]}"

    def stop(self) -> None:
        """Stop the hub's deliveries (the outcome was sent, or the socket closed)."""
        stop, self.stop_listening = self.stop_listening, None
        if stop is not None:
            stop()
        self.outbox = None
        if self.expiry is not None:
            self.expiry.cancel()
            self.expiry = None

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
        await self.send(text_data=PONG)

    async def send_error(self, error: str) -> None:
        await self.send(text_data=error_frame(error))

    async def dispatch(self, message: dict[str, Any]) -> None:
        """Handle a message without Channels' per-message database clean-up hop.

        Channels closes old database connections in a thread before every handler.
        This consumer never touches the database itself (the hub reads records for all
        sockets, and cleans up in its own hops), so that hop is pure cost: thousands of
        sockets closing at a job's end queued as many thread hops, a fifth of the
        server's CPU in the fan-out benchmark's burst.
        """
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await handler(message)

    async def websocket_disconnect(self, message: dict[str, Any]) -> None:
        """End the consumer (no channel groups to leave)."""
        await self.disconnect(message.get("code", 1000))
        raise StopConsumer()

    async def disconnect(self, code: int) -> None:
        self.stop()
        if self.slot is not None:
            self.slot.release()
        sender, self.sender = self.sender, None
        if sender is not None and sender is not asyncio.current_task():
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await sender
