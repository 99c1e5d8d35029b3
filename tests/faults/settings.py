"""Settings of every process on the simulated hosts (the suite's settings plus the fault app)."""

from tests.settings import *  # noqa: F403
from tests.settings import INSTALLED_APPS, LOGGING

INSTALLED_APPS = [*INSTALLED_APPS, "tests.faults.faultapp"]
# Warnings, and the sweep's line per resubmitted job (the suite counts them).
LOGGING = {
    **LOGGING,
    "loggers": {
        "django_gearattach": {"handlers": ["console"], "level": "WARNING"},
        "django_gearattach.worker.recovery": {"level": "INFO"},
    },
}
