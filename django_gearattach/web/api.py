"""``@offload`` for programs: the asynchronous request-reply pattern.

A request whose ``Accept`` header does not name HTML (``fetch()`` and ``curl`` send
``*/*``; a mobile app or a REST client ``application/json``) gets no processing page but:

* ``202 Accepted`` with ``Location``, the job's *status URL* (the view's own URL with
  ``?gearattach=<token>``), and ``Retry-After``;
* at the status URL, ``200`` with the job's state as JSON while it runs, then ``303
  See Other`` to the *result URL* (``?gearattach-result=<token>``) once it is done;
  a failed job's state says ``"failed"``;
* at the result URL, the view's own response: its status, headers, cookies and body.

``Prefer: wait=N`` (RFC 7240), on the first request or at the status URL, waits up to
N seconds (at most ``LONGPOLL_MAX_TIMEOUT``) for the job on the push path and, when it
finishes in time, answers with the view's response at once, within the bounds of
:mod:`~django_gearattach.web.waiting`.

Both URLs go through the view, so they are as protected as the view itself (its
authentication, the decorators above ``@offload``), and the token in them is bound
to the requester like every other token: someone else's status or result URL gets
403.
"""

from __future__ import annotations

from typing import Any

from django.http import (
    HttpRequest,
    HttpResponse,
    HttpResponseBase,
    HttpResponseRedirect,
    JsonResponse,
)
from django.utils.cache import add_never_cache_headers, patch_vary_headers
from django.utils.http import urlencode
from django.utils.translation import gettext

from .. import presence
from ..conf import conf
from ..models import Job
from .messages import failed_message
from .processing import TOKEN_PARAM

#: Seconds an API client is asked to wait before it asks about the job again.
RETRY_AFTER = 1
RESULT_PARAM = "gearattach-result"
HTML_TYPES = ("text/html", "application/xhtml+xml")


def wants_html(request: HttpRequest) -> bool:
    """Whether the client names HTML in ``Accept`` (browsers do; ``*/*`` is not enough).

    A request without ``Accept`` gets the page it always got.
    """
    accept = request.headers.get("Accept")
    if accept is None:
        return True
    for item in accept.split(","):
        media, *params = (part.strip().lower() for part in item.split(";"))
        if media in HTML_TYPES and not any(p.replace(" ", "") in ("q=0", "q=0.0") for p in params):
            return True
    return False


def prefer_wait(request: HttpRequest) -> float | None:
    """The seconds of ``Prefer: wait=N`` (capped at ``LONGPOLL_MAX_TIMEOUT``), or None."""
    for preference in request.headers.get("Prefer", "").split(","):
        name, _, value = preference.split(";")[0].strip().partition("=")
        if name.strip().lower() == "wait":
            try:
                seconds = float(value.strip().strip('"'))
            except ValueError:
                return None  # RFC 7240: a preference not understood is ignored
            if seconds >= 0:
                return min(seconds, conf.LONGPOLL_MAX_TIMEOUT)
    return None


def link(request: HttpRequest, param: str, token: str) -> str:
    """The view's URL, without our parameters, with ``param=token``."""
    query = request.GET.copy()
    for name in (TOKEN_PARAM, RESULT_PARAM):
        query.pop(name, None)
    query[param] = token
    return request.build_absolute_uri(
        f"{request.path}?{urlencode(list(query.lists()), doseq=True)}"
    )


def _json(data: dict[str, Any], status: int) -> JsonResponse:
    response = JsonResponse(data, status=status)
    add_never_cache_headers(response)
    patch_vary_headers(response, ("Accept", "Prefer"))
    return response


def state(request: HttpRequest, job: Job, token: str) -> dict[str, Any]:
    data: dict[str, Any] = {
        "status": job.status,
        "progress": {
            "numerator": job.progress_numerator,
            "denominator": job.progress_denominator,
        },
        "data": job.data,
        "status_url": link(request, TOKEN_PARAM, token),
    }
    if job.status == "complete":
        data["result_url"] = link(request, RESULT_PARAM, token)
    elif presence.unserved(job):
        data["waiting_for"] = "worker"
        data["message"] = gettext(
            "No worker is running for this job yet: it waits in the queue until one starts."
        )
    elif job.is_finished:
        data["error"] = failed_message(job.failure_text)["error"]
    return data


def accepted(request: HttpRequest, job: Job, token: str) -> HttpResponse:
    """``202 Accepted``: the job runs; ask its status URL."""
    response = _json(state(request, job, token), 202)
    response["Location"] = link(request, TOKEN_PARAM, token)
    response["Retry-After"] = str(RETRY_AFTER)
    return response


def see_other(url: str) -> HttpResponseRedirect:
    response = HttpResponseRedirect(url)
    response.status_code = 303
    add_never_cache_headers(response)
    return response


def status(request: HttpRequest, job: Job, token: str) -> HttpResponseBase:
    """The status URL: the state while the job runs, then ``303`` to the result."""
    if job.status == "complete":
        return see_other(link(request, RESULT_PARAM, token))
    answer = _json(state(request, job, token), 200)
    if job.is_active:
        answer["Retry-After"] = str(RETRY_AFTER)
    return answer


def not_ready(request: HttpRequest, job: Job, token: str) -> HttpResponse:
    """The result URL of a job with no result (yet): back to its status URL."""
    return see_other(link(request, TOKEN_PARAM, token))
