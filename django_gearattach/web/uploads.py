"""The upload size limit of ``@offload`` views (``GEARATTACH["OFFLOAD_MAX_UPLOAD_SIZE"]``).

An offloaded request's files are copied to default storage, where they wait for a
worker: without a limit one request could fill the disk. The body's declared length
is judged first, before anything parses it; the parsed files' sizes after, for a
body that declared none. Django's own ``DATA_UPLOAD_MAX_MEMORY_SIZE`` bounds the rest
of a request (form fields, a JSON body), but not files.
"""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.template.defaultfilters import filesizeformat
from django.utils.translation import gettext

from ..conf import conf


def declared_length(request: HttpRequest) -> int:
    try:
        return max(int(request.META.get("CONTENT_LENGTH") or 0), 0)
    except ValueError:
        return 0


def too_large(request: HttpRequest) -> HttpResponse | None:
    """HTTP 413 for a request over the limit; None when it is within it (or 0: none)."""
    limit = conf.OFFLOAD_MAX_UPLOAD_SIZE
    if not limit:
        return None
    size = declared_length(request)
    if size <= limit and request.method not in ("GET", "HEAD"):
        size = max(size, sum(f.size or 0 for _, files in request.FILES.lists() for f in files))
    if size <= limit:
        return None
    message = gettext("The upload is too large: this page accepts at most %(limit)s.") % {
        "limit": filesizeformat(limit)
    }
    return HttpResponse(message, status=413, content_type="text/plain; charset=utf-8")
