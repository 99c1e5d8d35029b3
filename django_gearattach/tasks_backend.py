"""The documented import path of :mod:`django_gearattach.integrations.tasks_backend`."""

from .integrations.tasks_backend import *  # noqa: F403
