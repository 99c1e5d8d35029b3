"""What an offloaded request stores: the request as signed JSON, the response as the result.

The web process stores what the worker needs to rebuild the request (method, path,
GET/POST, headers, the user id, uploads saved to default storage) in the job's
arguments, signed with ``SECRET_KEY`` so that a worker runs only requests that this
site made. Nothing in it may give someone who reads the record the visitor's
credentials:

* of the request's headers only an allow-list travels in clear (:data:`CAPTURED_HEADERS`
  and ``GEARATTACH["CAPTURED_HEADERS"]``): a proxy's or a client's credentials
  (``X-Api-Key``, ``X-Forwarded-User``...) never do. The ``Referer`` (it may hold a
  password-reset token) and the headers a view declares it needs
  (``@offload(headers=[...])``) are sealed. Cookies, ``Authorization`` headers and the
  CSRF header are never copied, nor is the CSRF form field;
* the session key and the CSRF secret, which the worker needs to load the session and
  to render CSRF tokens that match the visitor's cookie, are sealed
  (:mod:`~django_gearattach.sealing`): encrypted under a key derived from
  ``SECRET_KEY``;
* a shared view (``shared=True``) is stored as an anonymous request with no session
  and no CSRF secret at all: its response is served to everyone.

The worker stores the view's response as the job's result, its status, headers and
cookies with it: see :mod:`~django_gearattach.web.responses`.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Callable, Iterable
from typing import Any

from django.conf import settings
from django.core import signing
from django.core.files.storage import default_storage
from django.http import HttpRequest

from ..conf import conf
from ..exceptions import BadPayload
from ..payload import new_key, to_json_value
from ..sealing import seal
from . import sensitive as sensitive_fields
from .responses import DOWNLOAD_DIR, open_response

logger = logging.getLogger("django_gearattach")

SIGNING_SALT = "django_gearattach.offload"
UPLOAD_DIR = "gearattach/uploads"
#: Request headers never copied into a job, even when a view names them: the worker
#: gets the user the web process authenticated, and skips the CSRF check it made.
PRIVATE_HEADERS = frozenset(
    {"HTTP_COOKIE", "HTTP_AUTHORIZATION", "HTTP_PROXY_AUTHORIZATION", "HTTP_X_CSRFTOKEN"}
)
#: Request headers an offloaded request carries to the worker in clear: what views
#: commonly read (content negotiation, conditional requests, htmx, the address the
#: request was made to), none of them a credential.
CAPTURED_HEADERS = frozenset(
    {
        "Accept",
        "Accept-Charset",
        "Accept-Language",
        "Cache-Control",
        "DNT",
        "Host",
        "HX-Boosted",
        "HX-Request",
        "HX-Target",
        "HX-Trigger",
        "HX-Trigger-Name",
        "If-Match",
        "If-Modified-Since",
        "If-None-Match",
        "If-Unmodified-Since",
        "Sec-Fetch-Dest",
        "Sec-Fetch-Mode",
        "Sec-Fetch-Site",
        "Sec-Fetch-User",
        "User-Agent",
        "X-Forwarded-Host",
        "X-Forwarded-Port",
        "X-Forwarded-Proto",
        "X-Requested-With",
    }
)
#: Sealed rather than dropped: views use it for "back" links, and it may hold a token.
SEALED_HEADERS = frozenset({"Referer"})
FORM_TYPES = ("multipart/form-data", "application/x-www-form-urlencoded")
#: The form field that carries the masked CSRF token (the worker skips the CSRF check).
CSRF_FIELD = "csrfmiddlewaretoken"

_views: dict[str, Callable[..., Any]] = {}


def register_view(view: Callable[..., Any]) -> str:
    """Remember an ``@offload`` view's undecorated body; return its dotted path."""
    qualname = getattr(view, "__qualname__", "")
    if not qualname or "<" in qualname or "." in qualname:
        raise TypeError(
            f"@offload needs a module-level function view, not {view!r}: the worker finds "
            "the view by its dotted path. For a class-based view, decorate its dispatch "
            '(@method_decorator(offload, name="dispatch")) or use OffloadMixin.'
        )
    path = f"{view.__module__}:{qualname}"
    _views[path] = view
    return path


def registered_view(path: str) -> Callable[..., Any] | None:
    return _views.get(path)


def _canonical(view: str, request: dict[str, Any], key: str) -> str:
    return json.dumps([view, request, key], sort_keys=True, separators=(",", ":"))


def sign(view: str, request: dict[str, Any], key: str) -> str:
    """The signature of a request stored for the job ``key``, under ``SECRET_KEY``.

    The key is signed too: a request copied off the wire and submitted again under
    another key is refused, and under its own key it only reaches its own record.
    """
    return signing.Signer(salt=SIGNING_SALT).signature(_canonical(view, request, key))


def verify(view: str, request: dict[str, Any], key: str, signature: Any) -> bool:
    """Whether ``signature`` is this site's, under ``SECRET_KEY`` or a fallback key."""
    if not isinstance(signature, str):
        return False
    signer = signing.Signer(salt=SIGNING_SALT)
    try:
        signer.unsign(f"{_canonical(view, request, key)}{signer.sep}{signature}")
    except signing.BadSignature:
        return False
    return True


def signed_again(kwargs: dict[str, Any], key: str, new_key: str) -> dict[str, Any]:
    """An offloaded request's arguments, signed for the job ``new_key`` (a retry).

    Only a request this site signed for ``key`` is signed again: never one that came
    from elsewhere (:class:`~django_gearattach.exceptions.BadPayload`).
    """
    view, request = kwargs.get("view"), kwargs.get("request")
    if not (isinstance(view, str) and isinstance(request, dict)):
        raise BadPayload("the offloaded request's arguments are malformed")
    if request.get("sensitive_removed"):
        raise BadPayload(
            "the offloaded request's sensitive fields were removed from the record once it "
            "had run: it cannot be sent again from here; ask its user to send the form again"
        )
    if not verify(view, request, key, kwargs.get("signature")):
        raise BadPayload("the offloaded request was not signed by this site")
    return {**kwargs, "signature": sign(view, request, new_key)}


def meta_name(header: str) -> str:
    """``X-Tenant`` as ``request.META`` names it: ``HTTP_X_TENANT``."""
    return "HTTP_" + header.upper().replace("-", "_")


def _headers(request: HttpRequest, names: Iterable[str]) -> dict[str, str]:
    private = PRIVATE_HEADERS | {settings.CSRF_HEADER_NAME}
    keys = {meta_name(name) for name in names} - private
    return {k: v for k in sorted(keys) if isinstance(v := request.META.get(k), str)}


def serialise_request(
    request: HttpRequest,
    uploads: dict[str, list[dict[str, Any]]],
    args: Any,
    kwargs: Any,
    *,
    shared: bool = False,
    sensitive: frozenset[str] | str = frozenset(),
    headers: Iterable[str] = (),
) -> dict[str, Any]:
    """The request as JSON for the worker; see the module docstring for what is left out.

    The ``sensitive`` fields (names, or ``"__ALL__"``) are sealed apart
    (:mod:`~django_gearattach.web.sensitive`), as are the ``headers`` the view needs.
    """
    content_type = request.META.get("CONTENT_TYPE", "")
    form = request.method == "POST" and content_type.startswith(FORM_TYPES)
    body = b"" if form or request.method in ("GET", "HEAD") else request.body
    # A shared view's response is everyone's: nothing of the first requester's Referer.
    sealed_headers = _headers(request, [*headers, *(() if shared else SEALED_HEADERS)])
    post, encoded, hidden = sensitive_fields.split(
        (
            [[k, v] for k, values in request.POST.lists() if k != CSRF_FIELD for v in values]
            if form
            else None
        ),
        base64.b64encode(body).decode() if body else None,
        sensitive,
    )
    data = {
        "method": request.method,
        "script_name": request.META.get("SCRIPT_NAME", ""),
        "path_info": request.path_info,
        "query_string": request.META.get("QUERY_STRING", ""),
        "scheme": request.scheme,
        "host": request.get_host(),
        "remote_addr": request.META.get("REMOTE_ADDR", ""),
        "headers": _headers(request, [*CAPTURED_HEADERS, *conf.CAPTURED_HEADERS]),
        "sealed_headers": seal(sealed_headers) if sealed_headers else None,
        "content_type": content_type,
        "post": post,
        "body": encoded,
        "sensitive": hidden,
        "files": uploads,
        "shared": shared,
        "user_id": None if shared else _user_id(request),
        "session_login": False if shared else _session_login(request),
        "sealed": None if shared else _sealed_credentials(request),
        "args": list(args),
        "kwargs": dict(kwargs),
    }
    return dict(to_json_value(data))


def _user_id(request: HttpRequest) -> Any:
    user = getattr(request, "user", None)
    return user.pk if user is not None and user.is_authenticated else None


def _session_login(request: HttpRequest) -> bool:
    """Whether the user is signed in through the session (the worker checks it still is)."""
    session = getattr(request, "session", None)
    if session is None or _user_id(request) is None:
        return False
    from django.contrib.auth import SESSION_KEY

    return session.get(SESSION_KEY) is not None


def _sealed_credentials(request: HttpRequest) -> str | None:
    session = getattr(request, "session", None)
    credentials = {
        "session_key": session.session_key if session is not None else None,
        # The masked CSRF tokens the view renders must match the visitor's cookie.
        "csrf_cookie": request.META.get("CSRF_COOKIE"),
    }
    return seal(credentials) if any(credentials.values()) else None


def save_uploads(request: HttpRequest) -> dict[str, list[dict[str, Any]]]:
    """Store the request's uploads in default storage, for the worker to open."""
    folder = f"{UPLOAD_DIR}/{new_key()}"
    saved: dict[str, list[dict[str, Any]]] = {}
    for field, files in request.FILES.lists():
        for upload in files:
            path = default_storage.save(f"{folder}/{upload.name}", upload)
            saved.setdefault(field, []).append(
                {
                    "path": path,
                    "name": upload.name,
                    "content_type": upload.content_type,
                    "charset": upload.charset,
                    "size": upload.size,
                }
            )
    return saved


def delete_uploads(uploads: dict[str, list[dict[str, Any]]]) -> None:
    for files in uploads.values():
        for item in files:
            default_storage.delete(item["path"])


def stored_files(key: str, arguments: Any, result: Any) -> list[str]:
    """The storage paths an offloaded job's record names: its uploads and its download.

    A record's arguments are what someone submitted to gearmand, and a job's key is
    all it takes to submit one there: uploads count only when the request is one this
    site signed for this very key (its uploads were saved by this site, for it). The
    download comes from the result, which only this site's workers write. Only paths
    in this app's upload and download folders are returned.
    """
    paths = []
    kwargs = arguments.get("kwargs") if isinstance(arguments, dict) else None
    kwargs = kwargs if isinstance(kwargs, dict) else {}
    request, view = kwargs.get("request"), kwargs.get("view")
    signed = (
        isinstance(view, str)
        and isinstance(request, dict)
        and verify(view, request, key, kwargs.get("signature"))
    )
    uploads = request.get("files") if signed and isinstance(request, dict) else None
    if isinstance(uploads, dict):
        paths += [
            item["path"]
            for items in uploads.values()
            if isinstance(items, list)
            for item in items
            if isinstance(item, dict)
            and isinstance(item.get("path"), str)
            and _within(item["path"], UPLOAD_DIR)
        ]
    download = (open_response(result) or {}).get("download")
    path = download.get("path") if isinstance(download, dict) else None
    if isinstance(path, str) and _within(path, DOWNLOAD_DIR):
        paths.append(path)
    return paths


def _within(path: str, folder: str) -> bool:
    return path.startswith(f"{folder}/") and ".." not in path.split("/")
