"""Websocket routes: add them to your ASGI application's ``URLRouter``.

.. code-block:: python

    from channels.auth import AuthMiddlewareStack
    from channels.routing import ProtocolTypeRouter, URLRouter
    from channels.security.websocket import AllowedHostsOriginValidator
    from .routing import websocket_urlpatterns

    application = ProtocolTypeRouter({
        "http": django_asgi_app,
        "websocket": AllowedHostsOriginValidator(
            AuthMiddlewareStack(URLRouter(websocket_urlpatterns))
        ),
    })

``AuthMiddlewareStack`` matters: tokens are bound to the user or session, which the
consumer reads from the scope.
"""

from __future__ import annotations

from typing import Any

from django.urls import path

from .dashboard.live import DashboardConsumer
from .web.consumers import JobConsumer
from .web.paths import WEBSOCKET_PATH

__all__ = ["WEBSOCKET_PATH", "websocket_urlpatterns"]

websocket_urlpatterns: list[Any] = [
    # The admin dashboard's live panels (before the token route, which would match it).
    path(
        f"{WEBSOCKET_PATH}dashboard/",
        DashboardConsumer.as_asgi(),
        name="gearattach-dashboard-websocket",
    ),
    path(f"{WEBSOCKET_PATH}<str:token>/", JobConsumer.as_asgi(), name="gearattach-websocket"),
]
