"""The worker side of :func:`~django_gearattach.decorators.offload`.

The web process stores the request as JSON (method, path, GET/POST, selected headers,
the user id, the session key, uploads saved to default storage) and submits the
``gearattach.offload`` task. The worker rebuilds a request from it, with its user and
session, calls the undecorated view, and returns the response as JSON:
``{"status", "content_type", "html"}``, ``{"status", "redirect"}``, or for any other
content type ``{"status", "content_type", "download": {"path", "name", "size"}}``
with the body saved to default storage.

Anyone who can reach gearmand can submit jobs, so the worker runs only views that
were decorated with ``@offload`` and only payloads signed with ``SECRET_KEY``.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import mimetypes
import re
from collections.abc import Callable
from importlib import import_module
from inspect import iscoroutinefunction
from typing import Any

from asgiref.sync import async_to_sync, sync_to_async
from django.apps import apps
from django.conf import settings
from django.core import signing
from django.core.exceptions import BadRequest, PermissionDenied, SuspiciousOperation
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import UploadedFile
from django.core.handlers.exception import response_for_exception
from django.core.handlers.wsgi import WSGIRequest
from django.http import Http404, HttpRequest, HttpResponseBase, QueryDict
from django.http.request import split_domain_port
from django.urls import Resolver404, resolve
from django.utils.crypto import constant_time_compare
from django.utils.datastructures import MultiValueDict

from .exceptions import BadPayload
from .payload import new_key, to_json_value
from .tasks import JobContext, task
from .wire import OFFLOAD_FUNCTION

SIGNING_SALT = "django_gearattach.offload"
UPLOAD_DIR = "gearattach/uploads"
DOWNLOAD_DIR = "gearattach/downloads"
#: Request headers never copied into a job: credentials the worker does not need.
PRIVATE_HEADERS = frozenset(
    {"HTTP_COOKIE", "HTTP_AUTHORIZATION", "HTTP_PROXY_AUTHORIZATION", "HTTP_X_CSRFTOKEN"}
)
FORM_TYPES = ("multipart/form-data", "application/x-www-form-urlencoded")

_views: dict[str, Callable[..., Any]] = {}


def register_view(view: Callable[..., Any]) -> str:
    """Remember an ``@offload`` view's undecorated body; return its dotted path."""
    qualname = getattr(view, "__qualname__", "")
    if not qualname or "<" in qualname or "." in qualname:
        raise TypeError(
            f"@offload needs a module-level function view, not {view!r}: the worker finds "
            "the view by its dotted path. For a class-based view, submit a task yourself "
            "and return processing_response(request, job)."
        )
    path = f"{view.__module__}:{qualname}"
    _views[path] = view
    return path


def find_view(path: str) -> Callable[..., Any]:
    module, _, _ = path.partition(":")
    if path not in _views:
        try:
            import_module(module)
        except ImportError as exc:
            raise BadPayload(f"cannot import the view module {module!r}: {exc}") from exc
    try:
        return _views[path]
    except KeyError:
        raise BadPayload(f"{path} is not a view decorated with @offload") from None


def sign(view: str, request: dict[str, Any]) -> str:
    return signing.Signer(salt=SIGNING_SALT).signature(_canonical(view, request))


def _canonical(view: str, request: dict[str, Any]) -> str:
    return json.dumps([view, request], sort_keys=True, separators=(",", ":"))


# -- the web side: the request as JSON ---------------------------------------------------
def serialise_request(
    request: HttpRequest, uploads: dict[str, list[dict[str, Any]]], args: Any, kwargs: Any
) -> dict[str, Any]:
    user = getattr(request, "user", None)
    session = getattr(request, "session", None)
    content_type = request.META.get("CONTENT_TYPE", "")
    form = request.method == "POST" and content_type.startswith(FORM_TYPES)
    body = b"" if form or request.method in ("GET", "HEAD") else request.body
    data = {
        "method": request.method,
        "script_name": request.META.get("SCRIPT_NAME", ""),
        "path_info": request.path_info,
        "query_string": request.META.get("QUERY_STRING", ""),
        "scheme": request.scheme,
        "host": request.get_host(),
        "remote_addr": request.META.get("REMOTE_ADDR", ""),
        "headers": {
            k: v
            for k, v in request.META.items()
            if k.startswith("HTTP_") and k not in PRIVATE_HEADERS and isinstance(v, str)
        },
        "content_type": content_type,
        "post": [[k, v] for k, values in request.POST.lists() for v in values] if form else None,
        "body": base64.b64encode(body).decode() if body else None,
        "files": uploads,
        "user_id": user.pk if user is not None and user.is_authenticated else None,
        "session_key": session.session_key if session is not None else None,
        # The masked CSRF tokens the view renders must match the visitor's cookie.
        "csrf_cookie": request.META.get("CSRF_COOKIE"),
        "args": list(args),
        "kwargs": dict(kwargs),
    }
    return dict(to_json_value(data))


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


# -- the worker side ------------------------------------------------------------------------
class OffloadContext:
    """``request.gearattach`` inside an offloaded view: report progress and data.

    The methods work in sync and async views alike; in an async view they are queued
    behind the view and done by the time it returns (``await request.gearattach.
    aprogress(...)`` waits for each one instead).
    """

    def __init__(self, job: JobContext) -> None:
        self.job = job
        self.key = job.key
        self._pending: list[asyncio.Task[None]] = []

    def progress(self, numerator: int, denominator: int) -> None:
        self._call(self.job.progress, numerator, denominator)

    def data(self, value: Any) -> None:
        self._call(self.job.data, value)

    def warning(self, message: str) -> None:
        self._call(self.job.warning, message)

    async def aprogress(self, numerator: int, denominator: int) -> None:
        await sync_to_async(self.job.progress)(numerator, denominator)

    async def adata(self, value: Any) -> None:
        await sync_to_async(self.job.data)(value)

    def _call(self, method: Callable[..., None], *args: Any) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            method(*args)
            return
        # Reports write the job record: never from the event loop's thread.
        self._pending.append(loop.create_task(sync_to_async(method)(*args)))

    async def drain(self) -> None:
        pending, self._pending = self._pending, []
        for item in pending:
            await item


def rebuild_request(data: dict[str, Any], context: OffloadContext) -> WSGIRequest:
    body = base64.b64decode(data["body"]) if data.get("body") else b""
    domain, port = split_domain_port(data["host"])
    secure = data["scheme"] == "https"
    environ: dict[str, Any] = {
        "REQUEST_METHOD": data["method"],
        "SCRIPT_NAME": data["script_name"],
        "PATH_INFO": data["path_info"],
        "QUERY_STRING": data["query_string"],
        "SERVER_NAME": domain or "localhost",
        "SERVER_PORT": port or ("443" if secure else "80"),
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": data["remote_addr"],
        "CONTENT_TYPE": data["content_type"],
        "CONTENT_LENGTH": str(len(body)),
        "wsgi.url_scheme": data["scheme"],
        "wsgi.input": io.BytesIO(body),
        **data["headers"],
    }
    request = WSGIRequest(environ)
    if data["post"] is not None:
        post = QueryDict(mutable=True)
        for name, value in data["post"]:
            post.appendlist(name, value)
        post._mutable = False
        request._post = post  # type: ignore[attr-defined]
        request._files = MultiValueDict(  # type: ignore[attr-defined]
            {
                field: [
                    UploadedFile(
                        default_storage.open(item["path"], "rb"),
                        name=item["name"],
                        content_type=item["content_type"],
                        size=item["size"],
                        charset=item["charset"],
                    )
                    for item in files
                ]
                for field, files in data["files"].items()
            }
        )
    if data.get("csrf_cookie"):
        request.META["CSRF_COOKIE"] = data["csrf_cookie"]
    # The web process enforced CSRF before submitting; the rebuilt request has no cookie.
    request._dont_enforce_csrf_checks = True  # type: ignore[attr-defined]
    _attach_user_and_session(request, data)
    request.gearattach = context  # type: ignore[attr-defined]
    return request


def _attach_user_and_session(request: WSGIRequest, data: dict[str, Any]) -> None:
    if apps.is_installed("django.contrib.sessions"):
        store = import_module(settings.SESSION_ENGINE).SessionStore
        request.session = store(data.get("session_key"))
    if apps.is_installed("django.contrib.auth"):
        from django.contrib.auth import get_user_model
        from django.contrib.auth.models import AnonymousUser

        user: Any = AnonymousUser()
        if data.get("user_id") is not None:
            model = get_user_model()
            user = model._default_manager.filter(pk=data["user_id"]).first() or user
        request.user = user

        async def auser() -> Any:
            return user

        request.auser = auser
    if apps.is_installed("django.contrib.messages") and hasattr(request, "session"):
        from django.contrib.messages.storage.session import SessionStorage

        # Messages go to the session: a cookie set here would never reach the browser.
        request._messages = SessionStorage(request)  # type: ignore[attr-defined]


def _arguments(request: WSGIRequest, path: str, data: dict[str, Any]) -> tuple[Any, Any]:
    """The view's URL arguments, typed by the URL's converters when it resolves here."""
    try:
        match = resolve(request.path_info)
    except Resolver404:
        return data["args"], data["kwargs"]
    request.resolver_match = match
    if getattr(match.func, "gearattach_view", None) == path:
        return match.args, match.kwargs
    return data["args"], data["kwargs"]


def call_view(path: str, request: WSGIRequest, args: Any, kwargs: Any) -> HttpResponseBase:
    view = find_view(path)
    context: OffloadContext = request.gearattach  # type: ignore[attr-defined]
    try:
        if iscoroutinefunction(view):

            async def run() -> HttpResponseBase:
                try:
                    response: HttpResponseBase = await view(request, *args, **kwargs)
                    return response
                finally:
                    await context.drain()

            response = async_to_sync(run)()
        else:
            response = view(request, *args, **kwargs)
    except (Http404, PermissionDenied, BadRequest, SuspiciousOperation) as exc:
        response = response_for_exception(request, exc)
    render = getattr(response, "render", None)
    if callable(render) and not getattr(response, "is_rendered", True):
        render()
    if not isinstance(response, HttpResponseBase):
        raise TypeError(f"the view {path} returned {type(response).__name__}, not a response")
    return response


def response_to_result(response: HttpResponseBase, key: str) -> dict[str, Any]:
    status = response.status_code
    location = response.get("Location")
    if location and 300 <= status < 400:
        return {"status": status, "redirect": location}
    content_type = response.get("Content-Type", "")
    body: bytes = (
        b"".join(response.streaming_content)  # type: ignore[attr-defined]
        if response.streaming
        else response.content  # type: ignore[attr-defined]
    )
    if content_type.startswith("text/html"):
        html = body.decode(response.charset or "utf-8", "replace")
        return {"status": status, "content_type": content_type, "html": html}
    name = _filename(response.get("Content-Disposition", ""), content_type)
    path = default_storage.save(f"{DOWNLOAD_DIR}/{key}/{name}", ContentFile(body))
    return {
        "status": status,
        "content_type": content_type,
        "download": {"path": path, "name": name, "size": len(body)},
    }


def _filename(disposition: str, content_type: str) -> str:
    found = re.search(r'filename\s*=\s*"?([^";]+)"?', disposition)
    name = found.group(1).strip() if found else ""
    name = name.replace("/", "_").replace("\\", "_").lstrip(".")
    if name:
        return name
    extension = mimetypes.guess_extension(content_type.split(";")[0].strip()) or ".bin"
    return f"response{extension}"


@task(name=OFFLOAD_FUNCTION, bind=True)
def run_offloaded(
    job: JobContext, view: str, request: dict[str, Any], signature: str
) -> dict[str, Any]:
    """Run an ``@offload`` view's body in the worker; return its response as JSON."""
    if not constant_time_compare(signature, sign(view, request)):
        raise BadPayload(
            "the offloaded request is not signed with this site's SECRET_KEY: the web "
            "process and the workers must share SECRET_KEY"
        )
    context = OffloadContext(job)
    rebuilt = rebuild_request(request, context)
    try:
        args, kwargs = _arguments(rebuilt, view, request)
        response = call_view(view, rebuilt, args, kwargs)
        messages = getattr(rebuilt, "_messages", None)
        if messages is not None:
            messages.update(response)
        session = getattr(rebuilt, "session", None)
        if session is not None and session.modified:
            session.save()
        return response_to_result(response, job.key)
    finally:
        if request["post"] is not None:
            for _, uploads in rebuilt.FILES.lists():
                for upload in uploads:
                    upload.close()
        delete_uploads(request["files"] or {})
