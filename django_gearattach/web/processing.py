"""The processing page, and a finished offloaded view's stored response.

:func:`processing_response` is the explicit form of ``@offload``: a view that submits
a task itself returns it to get the same live page.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse, HttpResponseBase, JsonResponse
from django.shortcuts import render
from django.utils.cache import add_never_cache_headers
from django.utils.http import urlencode

from .. import presence
from ..conf import conf
from ..models import Job, Status
from ..payload import traceparent_of
from .messages import OFFLOAD_FUNCTION, outcome_message
from .responses import open_response, replay
from .tokens import TokenRefused, token_for

DEFAULT_TEMPLATE = "gearattach/processing.html"
REFUSED_TEMPLATE = "gearattach/refused.html"
#: The query parameter under which an offloaded view's page finds its job again.
TOKEN_PARAM = "gearattach"


def outcome_url(request: HttpRequest, token: str) -> str:
    """This page's URL with the job's token: reloading it shows the job, never reruns it."""
    query = request.GET.copy()
    query[TOKEN_PARAM] = token
    return f"{request.path}?{urlencode(list(query.lists()), doseq=True)}"


def processing_response(
    request: HttpRequest,
    job: Job,
    *,
    template: str | None = None,
    shared: bool = False,
    token: str | None = None,
    context: dict[str, Any] | None = None,
    status: int | None = None,
) -> HttpResponse:
    """A page that follows ``job`` live and shows its outcome.

    The token is bound to the requesting user (or session) unless ``shared``. The
    template (default ``gearattach/processing.html``) gets ``job``, ``token``,
    ``outcome`` (the finished job's complete/failed message, else None),
    ``outcome_url``, ``swap`` (``"document"`` for offloaded views: their HTML
    replaces the page) and ``traceparent`` (the job's trace context for a frontend
    tracer, with ``GEARATTACH["TRACE_CONTEXT_IN_PAGE"]``; else empty). The status is
    202 while the job is queued or running.
    """
    token = token or token_for(request, job, shared=shared)
    offloaded = job.function == OFFLOAD_FUNCTION
    outcome = outcome_message(job) if job.is_finished else None
    if status is None:
        status = 202 if job.is_active else 200 if job.status == Status.COMPLETE else 500
    page = {
        "job": job,
        "token": token,
        "outcome": outcome,
        "outcome_url": outcome_url(request, token) if offloaded else "",
        "swap": "document" if offloaded else "",
        "traceparent": _traceparent(job, offloaded),
        "unserved": presence.unserved(job),
        **(context or {}),
    }
    response = render(request, template or DEFAULT_TEMPLATE, page, status=status)
    add_never_cache_headers(response)
    return response


def _traceparent(job: Job, offloaded: bool) -> str:
    """The trace the job belongs to, checked well formed (it was stored from gearmand's
    side too); empty unless the setting asks for it."""
    if not conf.TRACE_CONTEXT_IN_PAGE:
        return ""
    return traceparent_of(job.arguments, offloaded) or ""


def outcome_response(
    request: HttpRequest, job: Job, token: str, template: str | None = None
) -> HttpResponseBase:
    """A finished offloaded view's response as the view made it (status, headers,
    cookies, body, redirect or file), from the record; else the processing page."""
    result = open_response(job.result) if job.status == Status.COMPLETE else None
    response = replay(result) if result is not None else None
    if response is not None:
        return response
    return processing_response(request, job, template=template, token=token)


def refused_response(
    request: HttpRequest, refusal: TokenRefused, *, program: bool = False
) -> HttpResponse:
    """403 for a job's link that its token does not open: a page (``program``: JSON)
    that says what happened, and with ``DEBUG`` on which check refused the token."""
    reason = refusal.reason if settings.DEBUG else ""
    response: HttpResponse
    if program:
        body = {"error": str(refusal), **({"reason": reason} if reason else {})}
        response = JsonResponse(body, status=403)
    else:
        page = {"reason": reason}
        response = render(request, REFUSED_TEMPLATE, page, status=403)
    add_never_cache_headers(response)
    return response
