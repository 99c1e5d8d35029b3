"""Tracing off (the default) costs nothing: OpenTelemetry is not even imported."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import ROOT

# A process that submits, runs (immediate mode runs the worker's own code), attaches
# (sync and async), follows a job through the hub and renders the processing page.
SCRIPT = """
import asyncio, sys
import django
from django.conf import settings

settings.configure(
    INSTALLED_APPS=["django.contrib.contenttypes", "django.contrib.auth",
                    "django.contrib.sessions", "django_gearattach"],
    DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}},
    GEARATTACH={"IMMEDIATE": True, "TRACING": TRACING},
    TEMPLATES=[{"BACKEND": "django.template.backends.django.DjangoTemplates",
                "APP_DIRS": True}],
    ROOT_URLCONF="tests.tracing.urls",
    USE_TZ=True,
)
django.setup()
from django.core.management import call_command
call_command("migrate", verbosity=0)
from django.test import RequestFactory
from django_gearattach import aattach, attach, submit, task
from django_gearattach.web.hub import get_hub
from django_gearattach.web.processing import processing_response
from django_gearattach.worker.loop import Worker
from django_gearattach.gearman.rendezvous import Address

@task(name="script.add")
def add(a, b):
    return a + b

job = submit(add, (1, 2))
assert [e.event for e in attach(job)] == ["complete"], job

async def follow():
    assert [e.event async for e in aattach("script.add", job.key)] == ["complete"]
    async with get_hub().subscribe("script.add", job.key) as subscription:
        async for message in subscription:
            pass

from asgiref.sync import async_to_sync
async_to_sync(follow)()
request = RequestFactory().get("/")
request.session = {}
processing_response(request, job, token="t")
Worker([add], [Address("127.0.0.1", 1)])
print(" ".join(sorted(sys.modules)))
"""


def loaded_modules(tracing: bool) -> set[str]:
    run = subprocess.run(
        [sys.executable, "-c", SCRIPT.replace("TRACING}", f"{tracing}}}")],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert run.returncode == 0, run.stderr
    return set(run.stdout.split())


def tracing_modules(modules: set[str]) -> list[str]:
    return sorted(
        m for m in modules if m.startswith(("opentelemetry", "django_gearattach.tracing"))
    )


def test_with_tracing_off_nothing_of_opentelemetry_is_imported() -> None:
    modules = loaded_modules(tracing=False)
    assert "django_gearattach.worker.loop" in modules  # the job did run here
    assert "django_gearattach.web.hub" in modules
    assert tracing_modules(modules) == []


def test_with_tracing_on_the_same_script_imports_it() -> None:
    """The check above can fail: the same script with tracing on loads OpenTelemetry."""
    found = tracing_modules(loaded_modules(tracing=True))
    assert "opentelemetry.trace" in found
    assert "django_gearattach.tracing.run" in found
    assert "django_gearattach.tracing.attaching" in found
