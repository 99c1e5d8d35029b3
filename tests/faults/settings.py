"""Settings of every process on the simulated hosts (the suite's settings plus the fault app)."""

from tests.settings import *  # noqa: F403
from tests.settings import INSTALLED_APPS, LOGGING

INSTALLED_APPS = [*INSTALLED_APPS, "tests.faults.faultapp"]
LOGGING = {
    **LOGGING,
    "loggers": {"django_gearattach": {"handlers": ["console"], "level": "WARNING"}},
}
