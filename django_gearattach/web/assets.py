"""The widget's script and style, served from the app's own URLs.

The template tag links ``gearattach.js`` and ``gearattach.css`` under the URLs the
widget needs anyway (``path("gearattach/", include("django_gearattach.urls"))``), so
they load under any server (uvicorn and daphne serve no static files) with no
static-files set-up. Each link carries a hash of the file (``?v=``), so browsers and
proxies may keep it for a year and fetch it again only when it changes.

With ``GEARATTACH["STATIC_ASSETS"] = True`` the tag links them through Django's
static files instead (``{% static %}``: a CDN, hashed names from
``ManifestStaticFilesStorage``); ``collectstatic`` collects them from
``django_gearattach/static/gearattach/`` either way.
"""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path

from django.http import Http404, HttpRequest, HttpResponse, HttpResponseNotModified
from django.templatetags.static import static
from django.urls import reverse
from django.utils.cache import patch_cache_control
from django.views.decorators.http import require_safe

from ..conf import conf

STATIC_DIR = Path(__file__).resolve().parent.parent / "static" / "gearattach"
TYPES = {
    "gearattach.js": "text/javascript; charset=utf-8",
    "gearattach.css": "text/css; charset=utf-8",
}
#: A year: the file behind a versioned link never changes.
FOREVER = 365 * 24 * 3600


@functools.lru_cache(maxsize=8)
def _load(name: str, mtime_ns: int) -> tuple[bytes, str]:
    data = (STATIC_DIR / name).read_bytes()
    return data, hashlib.sha256(data).hexdigest()[:16]


def load(name: str) -> tuple[bytes, str]:
    """The file's bytes and version (read again when the file changes: an editable install)."""
    return _load(name, (STATIC_DIR / name).stat().st_mtime_ns)


def url(name: str) -> str:
    """Where the page finds ``gearattach.js`` or ``gearattach.css``."""
    if conf.STATIC_ASSETS:
        return static(f"gearattach/{name}")
    return f"{reverse('gearattach:asset', kwargs={'name': name})}?v={load(name)[1]}"


@require_safe
def serve(request: HttpRequest, name: str) -> HttpResponse:
    if name not in TYPES:
        raise Http404("no such file")
    data, version = load(name)
    etag = f'"{version}"'
    if request.headers.get("If-None-Match") == etag:
        response: HttpResponse = HttpResponseNotModified()
    else:
        response = HttpResponse(data, content_type=TYPES[name])
    response["ETag"] = etag
    if request.GET.get("v") == version:
        patch_cache_control(response, public=True, max_age=FOREVER, immutable=True)
    else:
        patch_cache_control(response, no_cache=True)  # revalidated with the ETag
    response["X-Content-Type-Options"] = "nosniff"
    return response
