"""The "build a report" page: a slow view behind ``@offload``.

``/report/build/?region=EU&year=2024`` takes a few seconds, reporting each stage. The
same parameters are one shared job (``key=``, ``shared=True``): a second tab, or a
second visitor, asking for the same report attaches to the build in progress, and
once it is built everyone gets the stored page until someone asks for a fresh run.

``/report/recent/`` is the same report kept for ``DEMO_RECENT_MAX_AGE`` seconds only
(``max_age``): after that, for an hour more (``stale_while_revalidate``), a visitor gets
the stored page at once, marked "updating", while one rebuild runs, and the fresh page
replaces it when it is ready.
"""

from __future__ import annotations

import os
import random
import socket
import time
import uuid
from typing import Any

from django import forms
from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.http import require_GET

from django_gearattach.decorators import offload

REGIONS = [("EU", "Europe"), ("US", "United States"), ("APAC", "Asia-Pacific")]
STAGES = [
    "Loading orders",
    "Matching refunds",
    "Aggregating by month",
    "Computing totals",
    "Rendering the report",
]
MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
MAX_SECONDS = 30.0
#: Seconds the recent report is kept (settings.DEMO_RECENT_MAX_AGE).
RECENT_MAX_AGE: float = getattr(settings, "DEMO_RECENT_MAX_AGE", 30.0)


class ReportForm(forms.Form):
    region = forms.ChoiceField(choices=REGIONS, initial="EU")
    year = forms.IntegerField(min_value=2000, max_value=2100, initial=2024)
    seconds = forms.FloatField(
        min_value=0, max_value=MAX_SECONDS, initial=4, help_text="How slow the build is."
    )
    run = forms.CharField(required=False, widget=forms.HiddenInput)


def report_key(request: HttpRequest) -> str | None:
    """One job per report: region, year, speed and the fresh-run marker."""
    form = ReportForm(request.GET)
    if not form.is_valid():
        return None  # a job of its own, which answers with the form's errors
    data = form.cleaned_data
    return f"{data['region']}:{data['year']}:{data['seconds']}:{data['run']}"


@require_GET
def report_form(request: HttpRequest) -> HttpResponse:
    context = {"form": ReportForm(), "recent_max_age": RECENT_MAX_AGE}
    return render(request, "demo/report_form.html", context)


@require_GET
@offload(key=report_key, shared=True, template="demo/report_processing.html")
def build_report(request: HttpRequest) -> HttpResponse:
    return _build(request)


@require_GET
@offload(
    key=report_key,
    shared=True,
    template="demo/report_processing.html",
    max_age=RECENT_MAX_AGE,
    stale_while_revalidate=3600,
)
def recent_report(request: HttpRequest) -> HttpResponse:
    return _build(request)


def _build(request: HttpRequest) -> HttpResponse:
    form = ReportForm(request.GET)
    if not form.is_valid():
        return render(request, "demo/report_form.html", {"form": form}, status=400)
    region, year = form.cleaned_data["region"], form.cleaned_data["year"]
    pause = form.cleaned_data["seconds"] / len(STAGES)
    progress = request.gearattach  # type: ignore[attr-defined]
    for number, stage in enumerate(STAGES, start=1):
        progress.data(f"{stage}…")
        time.sleep(pause)
        progress.progress(number, len(STAGES))
    rows = _figures(region, year)
    context = {
        "region": dict(REGIONS)[region],
        "region_code": region,
        "year": year,
        "seconds": form.cleaned_data["seconds"],
        "rows": rows,
        "total": sum(r["revenue"] for r in rows),
        "run_id": f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:12]}",
        "built_at": timezone.now(),
        "fresh_run": uuid.uuid4().hex[:8],
    }
    return render(request, "demo/report.html", context)


def _figures(region: str, year: int) -> list[dict[str, Any]]:
    rng = random.Random(f"{region}-{year}")  # the same report for the same parameters
    rows = []
    for month in MONTHS:
        orders = rng.randint(800, 2400)
        revenue = orders * rng.randint(35, 60)
        rows.append({"month": month, "orders": orders, "revenue": revenue})
    return rows
