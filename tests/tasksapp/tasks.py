"""Django Tasks run by the Gearman backend, imported as the docs of each framework write it:
``django.tasks`` on Django 6, the ``django-tasks`` backport on Django 5.2."""

import time
from pathlib import Path

import django

if django.VERSION >= (6, 0):
    from django.tasks import task
else:
    from django_tasks import task  # type: ignore[no-redef]


class BillingError(Exception):
    pass


class Ledger:
    class Locked(Exception):
        """A nested class: its path is only known from the class itself."""


@task
def add(a, b):
    return a + b


@task(priority=10)
def urgent(value):
    return {"urgent": value}


@task(takes_context=True)
def with_context(context, gate=None):
    if gate:
        deadline = time.monotonic() + 30
        while not Path(gate).exists() and time.monotonic() < deadline:
            time.sleep(0.01)
    return {"id": context.task_result.id, "attempt": context.attempt}


@task
def charge(amount):
    raise BillingError(f"card declined for {amount}")


@task
def book(entry):
    raise Ledger.Locked(f"ledger locked for {entry}")


@task
async def async_double(value):
    return value * 2


@task
def oversleep():
    """Sleeps past the soft limit that TASKS OPTIONS["TIME_LIMITS"] gives it."""
    time.sleep(30)


@task
def rebuild_index(tenant_id, gate=None, tag=""):
    """Keyed by tenant with a follow-up (TASKS OPTIONS["KEY_POLICIES"] in tests/settings.py)."""
    deadline = time.monotonic() + 30
    while gate and not Path(gate).exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    return {"tenant": tenant_id, "tag": tag}


@task
async def async_nap(seconds):
    """Awaits ``seconds``; says on which thread, and when it started and ended."""
    import asyncio
    import threading
    import time as clock

    started = clock.time()
    await asyncio.sleep(seconds)
    return {"thread": threading.current_thread().name, "start": started, "end": clock.time()}
