"""ASGI entry point: Django for HTTP, django-gearattach's job consumer for websockets.

Serve it with uvicorn (``python -m uvicorn example_project.asgi:application --ws
wsproto``) or daphne; ``rundemo.py`` does.
"""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "example_project.settings")
django_asgi_app = get_asgi_application()  # sets Django up before the imports below

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402
from django.conf import settings  # noqa: E402
from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler  # noqa: E402

from django_gearattach.routing import websocket_urlpatterns  # noqa: E402

# runserver serves static files in debug mode; an ASGI server needs this handler (or
# whitenoise, or a web server in front) to do the same.
http_app = ASGIStaticFilesHandler(django_asgi_app) if settings.DEBUG else django_asgi_app

application = ProtocolTypeRouter(
    {
        "http": http_app,
        # The session and user in the scope are what job tokens are checked against.
        "websocket": AllowedHostsOriginValidator(
            AuthMiddlewareStack(URLRouter(websocket_urlpatterns))
        ),
    }
)
