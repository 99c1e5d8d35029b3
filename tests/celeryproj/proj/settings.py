"""Settings of the Celery-style test project (tests/integrations/test_celery_project.py)."""

import os
from datetime import timedelta
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
SECRET_KEY = "celeryproj-tests-only"
DEBUG = False
USE_TZ = True
TIME_ZONE = "UTC"
ALLOWED_HOSTS = ["*"]
INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django_gearattach",
    "demoapp",
]
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("CELERYPROJ_DB", str(BASE_DIR / "db.sqlite3")),
        "OPTIONS": {"init_command": "PRAGMA journal_mode=WAL;", "timeout": 30},
    }
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
SILENCED_SYSTEM_CHECKS = ["gearattach.W005"]  # no websocket routes in this project

GEARATTACH = {"SERVERS": os.environ.get("GEARATTACH_SERVERS", "127.0.0.1:4730").split(",")}

# Celery Configuration Options, as Celery's Django guide writes them.
CELERY_TIMEZONE = "Australia/Tasmania"
CELERY_TASK_TRACK_STARTED = True
CELERY_TASK_TIME_LIMIT = 30 * 60
CELERY_BROKER_URL = "amqp://guest:guest@localhost//"
CELERY_RESULT_BACKEND = "django-db"
CELERY_BEAT_SCHEDULE = {
    "heartbeat-every-second": {
        "task": "demoapp.tasks.heartbeat",
        "schedule": timedelta(seconds=1),
        "args": (os.environ.get("CELERYPROJ_HEARTBEATS", "/dev/null"),),
    },
}
