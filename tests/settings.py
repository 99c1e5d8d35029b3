"""Settings for the test suite (and for the gearworker subprocesses the tests start)."""

import os
import tempfile
from pathlib import Path
from typing import Any

import dj_database_url
import django

BASE_DIR = Path(__file__).resolve().parent
SECRET_KEY = os.environ.get("GEARATTACH_TEST_SECRET_KEY", "tests-only-not-secret")
# Key rotation tests start workers with the keys of their own.
SECRET_KEY_FALLBACKS = [
    k for k in os.environ.get("GEARATTACH_TEST_KEY_FALLBACKS", "").split(",") if k
]
DEBUG = False
USE_TZ = True
ALLOWED_HOSTS = ["*"]

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.admin",
    "django.contrib.staticfiles",
    "channels",  # tests/asgi.py serves the websocket routes (check gearattach.W005)
    "django_gearattach",
    "tests.testapp",
    "tests.celeryapp",  # Celery-style tasks (tests/integrations/test_celery_style.py)
]
# Django Tasks run by django_gearattach.tasks_backend (tests/integrations/test_tasks_backend.py):
# the framework is django.tasks on Django 6 and the django-tasks backport on Django 5.2.
if django.VERSION < (6, 0):
    INSTALLED_APPS.append("django_tasks")
INSTALLED_APPS.append("tests.tasksapp")
# The metrics app connects signal receivers (two reads per job in workers): only the
# gearworker processes of tests/test_metrics.py install it.
if os.environ.get("GEARATTACH_TEST_METRICS"):
    INSTALLED_APPS.append("django_gearattach.metrics")
TASKS = {
    "default": {
        "BACKEND": "django_gearattach.tasks_backend.GearmanBackend",
        "OPTIONS": {
            "TIME_LIMITS": {"tests.tasksapp.tasks.oversleep": {"soft_time_limit": 0.5}},
            "KEY_POLICIES": {
                "tests.tasksapp.tasks.rebuild_index": {
                    "key": ["tenant_id"],
                    "on_conflict": "follow_up",
                }
            },
        },
    }
}
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    # The visitor's language (Accept-Language): tests/test_i18n.py and its browser test.
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]
ROOT_URLCONF = "tests.urls"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]
STATIC_URL = "/static/"
# Uploads and downloads of @offload views: shared with the worker subprocesses, which
# inherit the environment variable set here.
MEDIA_ROOT = os.environ.setdefault(
    "GEARATTACH_TEST_MEDIA", str(Path(tempfile.gettempdir()) / f"gearattach-media-{os.getpid()}")
)
ASGI_APPLICATION = "tests.asgi.application"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"


def database_from_url(url: str, default_test_name: str) -> dict[str, Any]:
    """``DATABASE_URL`` read by dj-database-url; SQLite (a file) when it is empty."""
    if not url:
        return {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": BASE_DIR / "db.sqlite3",
            # A file, not memory: the gearworker subprocesses must see the same database.
            "TEST": {"NAME": default_test_name},
            "OPTIONS": {
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
                "transaction_mode": "IMMEDIATE",
                "timeout": 30,
            },
        }
    # One PostgreSQL leg runs with the options docs/deployment.rst recommends for
    # throughput (server-side binding, prepared statements), the other with Django's:
    # GEARATTACH_PG_OPTIONS is a URL query, which dj-database-url turns into OPTIONS
    # ("true" a bool, "5" an int).
    extra = os.environ.get("GEARATTACH_PG_OPTIONS", "")
    if extra:
        url += ("&" if "?" in url else "?") + extra
    database: dict[str, Any] = dict(dj_database_url.parse(url))
    if database["ENGINE"] != "django.db.backends.postgresql":
        raise ValueError(f"DATABASE_URL {url!r}: only postgres:// and SQLite are supported")
    return database


DATABASES = {
    "default": database_from_url(
        os.environ.get("DATABASE_URL", ""),
        # In the temp dir: SQLite leaves -wal/-shm files behind when worker processes
        # still had the database open as it was dropped.
        str(Path(tempfile.gettempdir()) / f"gearattach-test-{os.getpid()}.sqlite3"),
    )
}
# The suite's subprocesses use the test database that pytest-django created.
if os.environ.get("GEARATTACH_TEST_DATABASE"):
    DATABASES["default"]["NAME"] = os.environ["GEARATTACH_TEST_DATABASE"]

GEARATTACH = {
    "SERVERS": os.environ.get("GEARATTACH_SERVERS", "127.0.0.1:4730").split(","),
    "MAX_ATTEMPTS": 3,
    "TIMEOUT": 10.0,
    "PROGRESS_WRITE_INTERVAL": 0,
}
# Tests of the recovery sweep start workers that sweep often.
# Tests of the recovery sweep start workers that sweep often; tests of time limits and
# cancelling start workers with short ones.
for _name in (
    "RECOVERY_INTERVAL",
    "RECOVERY_GRACE",
    "CHECK_INTERVAL",
    "LEASE",
    "TIMEOUT",
    "TIME_LIMIT",
    "SOFT_TIME_LIMIT",
    "CANCEL_CHECK_INTERVAL",
    "CANCEL_GRACE",
):
    if os.environ.get(f"GEARATTACH_{_name}"):
        GEARATTACH[_name] = float(os.environ[f"GEARATTACH_{_name}"])

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"django_gearattach": {"handlers": ["console"], "level": "INFO"}},
}
