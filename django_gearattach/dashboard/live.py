"""Live dashboards: one refresh per process and period, pushed to every open page.

Like the job widget's :mod:`~django_gearattach.web.hub`, each event loop has one
:class:`Feed` per period, started by its first subscriber and stopped by its last.
Every ``GEARATTACH["DASHBOARD_REFRESH"]`` seconds it reads the snapshot (three
queries; the day chart's counts only for the minutes since the last refresh), asks
gearmand for its queue, renders the panels once and hands the same
encoded message to every socket. So a hundred open dashboards cost what one does.

:class:`DashboardConsumer` serves ``ws/gearattach/dashboard/?period=hour|day`` to
users who may see the job list (staff with the view or change job permission); it
closes others with 4403 and an unknown period with 4400. The viewer is asked again, from
the session as it stands, before every refresh a socket gets (a logout, a deactivation
or a lost permission closes it with 4403), and a socket ends after
``GEARATTACH["STREAM_MAX_AGE"]`` seconds with ``{"type": "reconnect"}``: the page
connects again, and is checked again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import weakref
from typing import Any
from urllib.parse import parse_qs

from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncWebsocketConsumer
from django.core.serializers.json import DjangoJSONEncoder
from django.utils import timezone

from ..conf import conf
from ..web.messages import PONG, RECONNECT, error_frame
from ..web.sessions import load_session, session_user
from . import panels
from .queries import PERIODS, MinuteCounts, snapshot

logger = logging.getLogger("django_gearattach.dashboard")

CLOSE_BAD_REQUEST = 4400
CLOSE_FORBIDDEN = 4403


def _snapshot_panels(period: str, health: Any, minutes: MinuteCounts) -> dict[str, str]:
    return panels.render(snapshot(period, minutes=minutes), health, panels.changelist_url())


class Feed:
    """One period's panels, refreshed for every subscriber of this event loop."""

    def __init__(self, period: str) -> None:
        self.period = period
        self.subscribers: set[asyncio.Queue[str]] = set()
        self.latest: str | None = None
        self.task: asyncio.Task[None] | None = None
        self.refreshes = 0
        self.minutes = MinuteCounts()  # the day chart's past minutes, read once

    def subscribe(self, queue: asyncio.Queue[str]) -> None:
        self.subscribers.add(queue)
        if self.latest is not None:
            queue.put_nowait(self.latest)
        if self.task is None or self.task.done():
            self.task = asyncio.get_running_loop().create_task(
                self._run(), name=f"gearattach dashboard {self.period}"
            )

    def unsubscribe(self, queue: asyncio.Queue[str]) -> None:
        self.subscribers.discard(queue)
        if not self.subscribers and self.task is not None:
            self.task.cancel()
            self.task = None
            self.latest = None
            self.minutes = MinuteCounts()

    async def _run(self) -> None:
        while True:
            try:
                text = await self.refresh()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                logger.warning("dashboard refresh failed: %s", exc)
                text = error_frame("the dashboard could not refresh")
            self.latest = text
            for queue in self.subscribers:
                queue.put_nowait(text)
            await asyncio.sleep(conf.DASHBOARD_REFRESH)

    async def refresh(self) -> str:
        """Read, render and encode the panels once."""
        # gearmand may take its timeout to answer: not on the database's thread.
        health = await sync_to_async(panels.servers, thread_sensitive=False)()
        html = await database_sync_to_async(_snapshot_panels)(self.period, health, self.minutes)
        self.refreshes += 1
        message = {
            "type": "dashboard",
            "period": self.period,
            "panels": html,
            "at": timezone.now(),
        }
        return json.dumps(message, cls=DjangoJSONEncoder, separators=(",", ":"))


_feeds: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, Feed]] = (
    weakref.WeakKeyDictionary()
)


def get_feed(period: str) -> Feed:
    """The feed of ``period`` in the running event loop."""
    feeds = _feeds.setdefault(asyncio.get_running_loop(), {})
    if period not in feeds:
        feeds[period] = Feed(period)
    return feeds[period]


def may_view_now(session_key: str | None) -> bool:
    """:func:`may_view` for the user of the session ``session_key`` as it stands now."""
    return bool(session_key) and may_view(session_user(load_session(session_key)))


def may_view(user: Any) -> bool:
    """What the job list asks: an active staff user with the view or change permission."""
    if user is None or not (user.is_active and user.is_staff):
        return False
    return bool(
        user.has_perm("django_gearattach.view_job")
        or user.has_perm("django_gearattach.change_job")
    )


class DashboardConsumer(AsyncWebsocketConsumer):  # type: ignore[misc]
    """``ws/gearattach/dashboard/?period=hour``: the panels, at every refresh."""

    channel_layer_alias = "gearattach-no-channel-layer"
    relay: asyncio.Task[None] | None = None

    async def connect(self) -> None:
        await self.accept()
        if not await database_sync_to_async(may_view)(self.scope.get("user")):
            await self.close(code=CLOSE_FORBIDDEN)
            return
        query = parse_qs(self.scope.get("query_string", b"").decode("latin-1"))
        period = query.get("period", ["hour"])[0]
        if period not in PERIODS:
            await self.send(text_data=error_frame(f"period must be one of: {', '.join(PERIODS)}"))
            await self.close(code=CLOSE_BAD_REQUEST)
            return
        self.relay = asyncio.get_running_loop().create_task(self.follow(get_feed(period)))

    async def follow(self, feed: Feed) -> None:
        queue: asyncio.Queue[str] = asyncio.Queue()
        session = self.scope.get("session")
        session_key = getattr(session, "session_key", None)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + conf.STREAM_MAX_AGE
        feed.subscribe(queue)
        try:
            while (left := deadline - loop.time()) > 0:
                try:
                    text = await asyncio.wait_for(queue.get(), left)
                except TimeoutError:
                    break
                if not await database_sync_to_async(may_view_now)(session_key):
                    await self.close(code=CLOSE_FORBIDDEN)
                    return
                await self.send(text_data=text)
            await self.send(text_data=RECONNECT)
            await self.close(code=1000)
        finally:
            feed.unsubscribe(queue)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if text_data == '{"type":"ping"}':
            await self.send(text_data=PONG)

    async def websocket_disconnect(self, message: dict[str, Any]) -> None:
        if self.relay is not None:
            self.relay.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.relay
        raise StopConsumer()
