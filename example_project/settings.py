"""Settings of the example project, read from environment variables with working defaults.

``GEARATTACH_SERVERS``  comma-separated gearmand addresses (default ``127.0.0.1:4730``)
``DATABASE_URL``        ``postgres://user:password@host:port/name`` or ``sqlite:///path``
                        (default: SQLite in ``example_project/db.sqlite3``)
``DJANGO_DEBUG``        ``1``/``0`` (default ``1``: this is a demo)
``DJANGO_SECRET_KEY``   required for anything but local use
``DJANGO_ALLOWED_HOSTS`` comma-separated (default ``127.0.0.1,localhost``)
``REDIS_URL``           ``redis://host:port/db``: use channels-redis as the channel layer
                        (default: the in-memory layer; needs the ``redis`` extra)
``DEMO_RECENT_MAX_AGE`` seconds the "recent report" page is kept before it refreshes
                        (default 30)
``GEARATTACH_STREAM_MAX_AGE`` seconds a browser's stream lasts before it reconnects
                        (default: the app's, 600)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent


def env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name, "").strip().lower()
    if not value:
        return default
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off"}:
        return False
    raise ImproperlyConfigured(f"{name}={value!r}: use 1 or 0")


def env_list(name: str, default: str) -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


def sqlite_database(path: Path | str) -> dict[str, Any]:
    return {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": path,
        # The web server and the gearworker processes write to one file at once: WAL
        # lets readers and the writer proceed together, IMMEDIATE takes the write lock
        # at BEGIN (no deadlocked upgrades), and the timeout waits out a busy writer.
        "OPTIONS": {
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            "transaction_mode": "IMMEDIATE",
            "timeout": 20,
        },
    }


def database_from_url(url: str) -> dict[str, Any]:
    """A ``DATABASES`` entry from ``DATABASE_URL``, read by dj-database-url.

    Query parameters become ``OPTIONS`` with their types (``?sslmode=require``,
    ``?server_side_binding=true&prepare_threshold=5``: a bool and an int).
    """
    if not url:
        return sqlite_database(BASE_DIR / "db.sqlite3")
    try:
        database: dict[str, Any] = dict(dj_database_url.parse(url))
    except ValueError as exc:  # an unknown scheme or a malformed URL
        raise ImproperlyConfigured(
            f"DATABASE_URL: {exc} Use postgres://user:password@host:port/name, "
            "sqlite:////absolute/path, or leave it unset for the default SQLite file."
        ) from None
    if database["ENGINE"] == "django.db.backends.sqlite3":
        if database["NAME"] in ("", ":memory:"):
            raise ImproperlyConfigured(
                f"DATABASE_URL={url!r}: give SQLite a file (the workers share it), "
                "e.g. sqlite:////tmp/demo.sqlite3"
            )
        return sqlite_database(database["NAME"])
    return database


DEBUG = env_bool("DJANGO_DEBUG", True)

# A development default so that the demo runs with no configuration. The
# "django-insecure-" prefix makes `manage.py check --deploy` flag it: set
# DJANGO_SECRET_KEY to a long random value anywhere other people can reach.
SECRET_KEY = os.environ.get(
    "DJANGO_SECRET_KEY", "django-insecure-example-project-dev-key-do-not-deploy"
)

ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", "127.0.0.1,localhost,[::1]")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "django_gearattach",
    "example_project.demo",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "example_project.urls"
WSGI_APPLICATION = "example_project.wsgi.application"
ASGI_APPLICATION = "example_project.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {"default": database_from_url(os.environ.get("DATABASE_URL", "").strip())}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
# Files that offloaded views receive (uploads) and return (downloads); the web server
# and the workers must share this directory (or use a shared storage backend).
MEDIA_ROOT = BASE_DIR / "media"

# django-gearattach's live widget needs no channel layer (each ASGI process shares one
# gearmand attachment per job among its sockets); one is configured for the project's
# own consumers: in-memory by default, Redis when REDIS_URL is set.
if os.environ.get("REDIS_URL", "").strip():
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [os.environ["REDIS_URL"].strip()]},
        }
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

GEARATTACH: dict[str, Any] = {
    "SERVERS": env_list("GEARATTACH_SERVERS", "127.0.0.1:4730"),
}
if os.environ.get("GEARATTACH_STREAM_MAX_AGE", "").strip():
    GEARATTACH["STREAM_MAX_AGE"] = float(os.environ["GEARATTACH_STREAM_MAX_AGE"])
# The demo's "recent report" (demo/reports.py): @offload(max_age=..., stale_while_revalidate=...)
DEMO_RECENT_MAX_AGE = float(os.environ.get("DEMO_RECENT_MAX_AGE", "30"))
