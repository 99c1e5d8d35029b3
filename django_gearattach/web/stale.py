"""An offloaded view's stored response served from the record, fresh or stale.

With a key policy that keeps outcomes for a while (``@offload(key=..., max_age=600,
stale_while_revalidate=60)``, see :mod:`~django_gearattach.policies`):

* :func:`from_record` answers a GET from the record alone (one SELECT, no session
  written, no request stored) while the stored response is fresh, or while it is
  stale and its refresh already runs. Otherwise the request takes the full path,
  whose submit starts the one refresh (or the new run).
* :func:`stale_response` is the stored response served while its key refreshes, with
  an ``Age`` header; an HTML page gets an "updating" notice whose widget follows the
  refresh and swaps the fresh page in when it is ready.
"""

from __future__ import annotations

import re
from datetime import timedelta

from django.http import HttpRequest, HttpResponse, HttpResponseBase
from django.template.loader import render_to_string
from django.utils import timezone
from django.utils.cache import patch_vary_headers
from django.utils.timesince import timesince
from django.utils.translation import ngettext

from .. import records
from ..models import Job, Status
from ..policies import KeyPolicy, StoredOutcome
from .api import RESULT_PARAM
from .messages import OFFLOAD_FUNCTION
from .processing import TOKEN_PARAM, outcome_response, outcome_url, processing_response
from .responses import open_response, replay
from .tokens import token_for

UPDATING_TEMPLATE = "gearattach/updating.html"
_BODY_END = re.compile(rb"</body\s*>", re.IGNORECASE)


def from_record(
    request: HttpRequest,
    key: str,
    policy: KeyPolicy,
    *,
    shared: bool,
    template: str | None,
    html: bool,
) -> HttpResponseBase | None:
    """The answer to a GET of the offloaded view whose job ``key`` names, from its record;
    None when the request must take the full path (no record, an expired outcome, a
    stale one whose refresh has not started)."""
    job = records.get(OFFLOAD_FUNCTION, key)
    if job is None:
        return None
    response: HttpResponseBase
    if job.status == Status.COMPLETE and policy.fresh(job, timezone.now()):
        response = outcome_response(request, job, token_for(request, job, shared=shared), template)
    elif job.is_active and (stale := policy.stale(job)) is not None:
        token = token_for(request, job, shared=shared)
        response = stale_response(request, job, stale, token, html=html)
    else:
        return None
    patch_vary_headers(response, ("Accept", "Prefer"))
    return response


def stale_response(
    request: HttpRequest, job: Job, stale: StoredOutcome, token: str, *, html: bool = True
) -> HttpResponseBase:
    """The stored response ``stale`` served while ``job`` (its key's refresh) runs.

    ``Age`` says how old it is (seconds since its run ended). For a browser (``html``)
    an HTML page with status 200 also gets, before ``</body>``, the "updating" notice
    of :data:`UPDATING_TEMPLATE` (``token``, ``stored_at``, ``age``, ``outcome_url``), whose
    widget swaps the fresh page in when the refresh completes.
    """
    opened = open_response(stale.result)
    response = replay(opened) if opened is not None else None
    if response is None:  # no page kept (a key rotated away, a file gone): wait for it
        return processing_response(request, job, token=token)
    response["Age"] = str(max(int(stale.age()), 0))
    if html and isinstance(response, HttpResponse) and _is_html_page(response):
        notice = render_to_string(
            UPDATING_TEMPLATE,
            {
                "token": token,
                "stored_at": stale.finished_at,
                "age": _age_text(stale.age()),
                "outcome_url": _page_url(request, token),
            },
            request=request,
        )
        _insert_before_body_end(response, notice)
    return response


def _page_url(request: HttpRequest, token: str) -> str:
    """Where the notice sends the browser once the refresh is ready: the page's own URL
    for a GET (the fresh page is then answered from the record, and a reload later never
    names a run that a newer refresh has replaced), else the run's token URL."""
    if request.method not in ("GET", "HEAD"):
        return outcome_url(request, token)
    query = request.GET.copy()
    for name in (TOKEN_PARAM, RESULT_PARAM):
        query.pop(name, None)
    return f"{request.path}?{query.urlencode()}" if query else request.path


def _age_text(seconds: float) -> str:
    if seconds >= 60:
        return timesince(timezone.now() - timedelta(seconds=seconds))
    whole = max(int(seconds), 0)
    return ngettext("%(count)d second", "%(count)d seconds", whole) % {"count": whole}


def _is_html_page(response: HttpResponse) -> bool:
    content_type = response.get("Content-Type", "").lower()
    return response.status_code == 200 and content_type.startswith("text/html")


def _insert_before_body_end(response: HttpResponse, notice: str) -> None:
    encoded = notice.encode(response.charset or "utf-8")
    body = response.content
    matches = list(_BODY_END.finditer(body))
    at = matches[-1].start() if matches else len(body)
    response.content = body[:at] + encoded + body[at:]
