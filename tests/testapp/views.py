"""Views the web-layer tests offload to real workers.

Each offloaded view appends one line per execution to the file named by the ``log``
parameter (tests count executions with it) and waits for the file named by ``gate``
to exist when one is given (tests use it to hold a job while they attach).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
import uuid
from pathlib import Path

from django.contrib import messages
from django.contrib.auth.decorators import login_required, user_passes_test
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.middleware.csrf import get_token
from django.utils.html import escape

from django_gearattach import submit
from django_gearattach.web.decorators import offload
from django_gearattach.web.processing import processing_response


def _param(request: HttpRequest, name: str) -> str:
    return request.POST.get(name) or request.GET.get(name) or ""


def _record_execution(request: HttpRequest) -> str:
    execution = f"{os.getpid()}-{uuid.uuid4().hex}"
    if log := _param(request, "log"):
        with open(log, "a") as out:
            out.write(execution + "\n")
    return execution


def _wait_for_gate(request: HttpRequest) -> None:
    gate = _param(request, "gate")
    deadline = time.monotonic() + 30
    while gate and not Path(gate).exists() and time.monotonic() < deadline:
        time.sleep(0.01)


def _page(request: HttpRequest, title: str, execution: str, extra: str = "") -> HttpResponse:
    user = request.user.get_username() if request.user.is_authenticated else "anonymous"
    body = (
        f"<!doctype html><html><head><title>{escape(title)}</title></head><body>"
        f"<h1>{escape(title)}</h1>"
        f'<p id="execution">{escape(execution)}</p>'
        f'<p id="method">{escape(request.method or "")}</p>'
        f'<p id="user">{escape(user)}</p>'
        f'<p id="colour">{escape(_param(request, "colour"))}</p>'
        f'<p id="session">{escape(str(request.session.get("favourite", "")))}</p>'
        f'<p id="csrf">{escape(get_token(request))}</p>'
        f"{extra}</body></html>"
    )
    return HttpResponse(body)


@offload
def sync_report(request: HttpRequest) -> HttpResponse:
    execution = _record_execution(request)
    request.gearattach.progress(1, 3)  # type: ignore[attr-defined]
    request.gearattach.data({"stage": "started"})  # type: ignore[attr-defined]
    _wait_for_gate(request)
    request.gearattach.progress(2, 3)  # type: ignore[attr-defined]
    request.session["visited_worker"] = True
    messages.info(request, "built in the worker")
    request.gearattach.progress(3, 3)  # type: ignore[attr-defined]
    return _page(request, "Sync report", execution)


@offload(priority="high")
async def async_report(request: HttpRequest) -> HttpResponse:
    execution = _record_execution(request)
    user = await request.auser()
    request.gearattach.progress(1, 2)  # type: ignore[attr-defined]
    await asyncio.sleep(0.01)
    await request.gearattach.aprogress(2, 2)  # type: ignore[attr-defined]
    name = user.get_username() if user.is_authenticated else "anonymous"
    return HttpResponse(
        f'<p id="execution">{execution}</p><p id="user">{escape(name)}</p>'
        f'<p id="method">{request.method}</p>'
        f'<p id="colour">{escape(_param(request, "colour"))}</p>'
    )


@offload(key=lambda request: request.GET.get("year"))
def keyed_report(request: HttpRequest) -> HttpResponse:
    execution = _record_execution(request)
    _wait_for_gate(request)
    return _page(request, f"Report {request.GET.get('year')}", execution)


@offload(key=lambda request: request.GET.get("year"), shared=True)
def shared_report(request: HttpRequest) -> HttpResponse:
    if not request.GET.get("year"):
        # No key: the visitor's own job, which answers their mistake (issue 21).
        return HttpResponse("Which year? Add ?year= to the address.", status=400)
    execution = _record_execution(request)
    _wait_for_gate(request)
    return _page(request, f"Shared report {request.GET.get('year')}", execution)


@offload(
    key=lambda request: request.GET.get("year"),
    shared=True,
    max_age=1,
    stale_while_revalidate=60,
)
def yearly_report(request: HttpRequest) -> HttpResponse:
    """A shared page that may be a second old, and is served stale while it refreshes."""
    execution = _record_execution(request)
    _wait_for_gate(request)
    return _page(request, f"Yearly report {request.GET.get('year')}", execution)


@offload(key=lambda request: "staff-figures", shared=True)
def shared_checks_inside(request: HttpRequest) -> HttpResponse:
    """The wrong place for an access check: a shared view runs as an anonymous visitor."""
    execution = _record_execution(request)
    if not request.user.is_staff:
        raise PermissionDenied
    return _page(request, "Staff figures", execution)


@user_passes_test(lambda user: user.is_staff)
@offload(key=lambda request: "staff-figures", shared=True)
def shared_checks_outside(request: HttpRequest) -> HttpResponse:
    """The right place: the check runs in the web process for every requester."""
    return _page(request, "Staff figures", _record_execution(request))


@login_required
@offload
def private_report(request: HttpRequest) -> HttpResponse:
    return _page(request, "Private report", _record_execution(request))


@offload
def item(request: HttpRequest, number: int) -> HttpResponse:
    return HttpResponse(f'<p id="item">{number!r} {type(number).__name__}</p>')


@offload
def redirecting(request: HttpRequest) -> HttpResponse:
    return HttpResponseRedirect("/somewhere/else/")


@offload
def csv_export(request: HttpRequest) -> HttpResponse:
    _wait_for_gate(request)
    response = HttpResponse("year,total\n2024,42\n", content_type="text/csv")
    response["Content-Disposition"] = 'attachment; filename="totals.csv"'
    return response


@offload(accept_files=True)
def upload(request: HttpRequest) -> HttpResponse:
    document = request.FILES.getlist("document")[0]
    digest = hashlib.sha256(document.read()).hexdigest()
    return HttpResponse(
        f'<p id="name">{escape(document.name or "")}</p><p id="digest">{digest}</p>'
        f'<p id="colour">{escape(request.POST.get("colour", ""))}</p>'
    )


@offload(key=lambda request: "queue", accept_files=True, on_conflict="follow_up")
def upload_queue(request: HttpRequest) -> HttpResponse:
    """Files posted while it runs are handled once more, by one follow-up run."""
    _record_execution(request)
    document = request.FILES.getlist("document")[0]
    content = document.read().decode()
    _wait_for_gate(request)
    return HttpResponse(f'<p id="content">{escape(content)}</p>')


@offload(accept_files=False)
def no_files(request: HttpRequest) -> HttpResponse:
    return HttpResponse("<p>never runs with files</p>")


@offload
def broken(request: HttpRequest) -> HttpResponse:
    raise ValueError("the report exploded")


@offload
def missing(request: HttpRequest) -> HttpResponse:
    raise Http404("no such report")


def explicit(request: HttpRequest) -> HttpResponse:
    """The explicit form: submit a task, return processing_response (``?fail=1``: a
    task that fails)."""
    owner = request.user if request.user.is_authenticated else None
    if request.GET.get("fail"):
        job = submit("tests.fail", ["a task error"], owner=owner)
    else:
        job = submit("tests.chatty", kwargs={"gate": _param(request, "gate")}, owner=owner)
    return processing_response(request, job)


#: Request headers the header views report, as the worker saw them.
REPORTED_HEADERS = (
    "HTTP_ACCEPT_LANGUAGE",
    "HTTP_USER_AGENT",
    "HTTP_REFERER",
    "HTTP_X_TENANT",
    "HTTP_X_API_KEY",
    "HTTP_X_AUTH_TOKEN",
    "HTTP_X_AMZN_OIDC_DATA",
    "HTTP_X_FORWARDED_USER",
    "HTTP_X_REGION",
)


def _headers_seen(request: HttpRequest) -> HttpResponse:
    seen = {name: request.META.get(name) for name in REPORTED_HEADERS}
    return HttpResponse(
        "".join(f'<p id="{name}">{escape(str(value))}</p>' for name, value in seen.items())
    )


@offload(headers=["X-Tenant"])
def headers_report(request: HttpRequest) -> HttpResponse:
    """Reports the headers it got in the worker; declares X-Tenant as one it needs."""
    return _headers_seen(request)


@offload
def streaming_report(request: HttpRequest) -> HttpResponse:
    """Streams its words to the processing page (``request.gearattach.stream``)."""
    for word in ("Dear", " <b>reader</b>,", " done."):
        request.gearattach.stream(word)  # type: ignore[attr-defined]
    return HttpResponse('<p id="streamed">streamed</p>')


@offload
async def async_streaming_report(request: HttpRequest) -> HttpResponse:
    """The same from an async view: ``astream`` waits for each chunk."""
    for word in ("Dear", " <b>reader</b>,", " done."):
        await request.gearattach.astream(word)  # type: ignore[attr-defined]
    request.gearattach.stream({"words": 3})  # type: ignore[attr-defined]
    return HttpResponse('<p id="streamed">streamed</p>')
