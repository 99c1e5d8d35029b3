"""The task, the view and the URLs that :mod:`.policies` measures (imported once Django is
configured: it is the benchmark's ``ROOT_URLCONF``)."""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

from django.http import HttpRequest, HttpResponse
from django.urls import include, path

from ..tasks import task
from ..web.decorators import offload

REBUILD = "gearattach.bench.rebuild"
#: How long the benchmark's page stays fresh, and then stale (seconds).
MAX_AGE = 1.0
STALE = 3600.0


def _wait(gate: str) -> None:
    deadline = time.monotonic() + 120
    while gate and not Path(gate).exists() and time.monotonic() < deadline:
        time.sleep(0.005)


def _log(log: str) -> str:
    execution = f"{os.getpid()}-{uuid.uuid4().hex}"
    with open(log, "a") as out:
        out.write(execution + "\n")
    return execution


@task(name=REBUILD, on_conflict="follow_up")
def rebuild(log: str, gate: str = "", trigger: str = "") -> str:
    """Log the run, then hold it until ``gate`` exists."""
    _log(log)
    _wait(gate)
    return trigger


@offload(
    key=lambda request: request.GET.get("page", "yearly"),
    shared=True,
    max_age=MAX_AGE,
    stale_while_revalidate=STALE,
)
def yearly(request: HttpRequest) -> HttpResponse:
    """A slow shared page: logs its run, waits for the ``gate`` it was given."""
    execution = _log(request.GET["log"])
    _wait(request.GET.get("gate", ""))
    rows = "".join(f"<tr><td>{month}</td><td>{month * 1234}</td></tr>" for month in range(1, 13))
    return HttpResponse(
        "<!doctype html><html><head><title>Yearly report</title></head><body>"
        f'<h1>Yearly report</h1><p id="run">{execution}</p><table>{rows}</table></body></html>'
    )


urlpatterns = [
    path("report/", yearly),
    path("gearattach/", include("django_gearattach.urls")),
]
