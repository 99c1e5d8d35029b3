"""The documented import path of :mod:`django_gearattach.testing.pytest_plugin`."""

from .testing.pytest_plugin import *  # noqa: F403
