"""The demo's pages: start a slow job, follow it live, and several jobs on one page."""

from __future__ import annotations

import json
import shlex

from django.contrib import messages
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_http_methods

from django_gearattach import SubmitFailed, submit
from django_gearattach.models import Job
from django_gearattach.tokens import token_for

from .forms import SlowJobForm
from .tasks import slow

RECENT_JOBS = 20


@require_http_methods(["GET", "POST"])
def index(request: HttpRequest) -> HttpResponse:
    form = SlowJobForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        if not request.session.session_key:
            request.session.save()  # anonymous visitors own their jobs through the session
        # To tell the visitor what happened (submit() itself decides), and to refuse
        # running someone else's finished job again: a rerun takes the record over.
        before = Job.objects.for_key(slow.name, data["key"]).first() if data["key"] else None
        if before is not None and data["rerun"] and not owns(request, before):
            return _taken(request, form)
        try:
            job = submit(
                slow,
                kwargs={"seconds": data["seconds"], "steps": data["steps"]},
                key=data["key"],
                rerun=data["rerun"],
                owner=request.user if request.user.is_authenticated else None,
                session_key=request.session.session_key or "",
            )
        except SubmitFailed as exc:
            form.add_error(None, str(exc))
        else:
            if not may_see(request, job):
                return _taken(request, form)
            if before is not None and before.is_active:
                messages.info(
                    request,
                    "A job with this key was already queued or running: this page follows "
                    "that job, nothing new was started.",
                )
            elif before is not None and not data["rerun"]:
                messages.info(
                    request,
                    "A job with this key already finished: this is its stored outcome. "
                    "Tick “Run again if finished” to start it anew.",
                )
            return redirect("demo:job", function=job.function, key=job.key)
    return render(request, "demo/index.html", {"form": form, "recent": recent(request)})


def _taken(request: HttpRequest, form: SlowJobForm) -> HttpResponse:
    form.add_error("key", "A job with this key belongs to someone else: choose another key.")
    return render(request, "demo/index.html", {"form": form, "recent": recent(request)})


def recent(request: HttpRequest) -> QuerySet[Job]:
    """The visitor's latest jobs (everyone's for staff): results are private."""
    jobs = Job.objects.order_by("-created_at")
    if not request.user.is_staff:
        jobs = jobs.owned_by(request.user, request.session.session_key)
    return jobs[:RECENT_JOBS]


def owns(request: HttpRequest, job: Job) -> bool:
    """Whether the visitor started ``job`` (as a user, or in this browser session)."""
    return job.belongs_to(request.user, request.session.session_key)


def may_see(request: HttpRequest, job: Job) -> bool:
    return owns(request, job) or request.user.is_staff


@require_http_methods(["GET"])
def job_detail(request: HttpRequest, function: str, key: str) -> HttpResponse:
    job = get_object_or_404(Job, function=function, key=key)
    if not may_see(request, job):
        # The same answer as for a job that does not exist: keys reveal nothing.
        raise Http404("no such job")
    mine = owns(request, job)
    context = {
        "job": job,
        "mine": mine,
        # The live widget follows the job for its owner; others see the record only.
        "token": token_for(request, job) if mine else "",
        "result_json": json.dumps(job.result, indent=2) if job.result is not None else "",
        "percent": round(job.progress * 100) if job.progress is not None else None,
        "attach_command": shlex.join(
            ["python", "example_project/manage.py", "gearattach", "attach", job.function, job.key]
        ),
    }
    return render(request, "demo/job.html", context)


@require_http_methods(["GET", "POST"])
def batch(request: HttpRequest) -> HttpResponse:
    """Three jobs on one page, each widget on another transport (websocket, SSE, long-poll)."""
    if request.method == "GET":
        return render(request, "demo/batch.html", {"widgets": []})
    if not request.session.session_key:
        request.session.save()
    owner = request.user if request.user.is_authenticated else None
    widgets = []
    for seconds, transports, label in [
        (1.5, "ws", "Over a websocket"),
        (2.0, "sse", "Over Server-Sent Events"),
        (2.5, "poll", "Over long-polling"),
    ]:
        job = submit(
            slow,
            kwargs={"seconds": seconds, "steps": 5},
            owner=owner,
            session_key=request.session.session_key or "",
        )
        token = token_for(request, job)
        widgets.append({"token": token, "transports": transports, "label": label})
    return render(request, "demo/batch.html", {"widgets": widgets})
