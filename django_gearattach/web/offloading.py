"""The worker side of :func:`~django_gearattach.decorators.offload`.

The web process stores the request as signed JSON (:mod:`~django_gearattach.web.capture`)
and submits the ``gearattach.offload`` task. The worker rebuilds a request from it,
with its user, session and sensitive fields (:mod:`~django_gearattach.web.sensitive`),
calls the undecorated view (or builds a class-based view and dispatches to it:
:mod:`~django_gearattach.web.classviews`), and returns the response, status, headers and
cookies included, as JSON (:mod:`~django_gearattach.web.responses`). The sensitive
fields leave the record once the view has run.

Anyone who can reach gearmand can submit jobs, so the worker runs only views that
were decorated with ``@offload`` and only payloads signed with ``SECRET_KEY`` (or a
key in ``SECRET_KEY_FALLBACKS``). It runs a request as its user only while that user
may still make it: an inactive user, or a session that was signed out or whose
password changed since, is refused (:class:`~django_gearattach.exceptions.
OffloadRefused`), as Django's own ``get_user`` would refuse the next request. A shared
view runs as an anonymous visitor without a session, and only a response with a
status below 400 is kept as its shared outcome.
"""

from __future__ import annotations

import asyncio
import base64
import io
from collections.abc import Callable
from importlib import import_module
from inspect import isawaitable, iscoroutinefunction
from typing import Any

from asgiref.sync import async_to_sync, sync_to_async
from django.apps import apps
from django.conf import settings
from django.core.exceptions import BadRequest, PermissionDenied, SuspiciousOperation
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import UploadedFile
from django.core.handlers.exception import response_for_exception
from django.core.handlers.wsgi import WSGIRequest
from django.http import Http404, HttpResponseBase, QueryDict
from django.http.request import split_domain_port
from django.middleware.csrf import CsrfViewMiddleware
from django.urls import Resolver404, resolve
from django.utils.datastructures import MultiValueDict

from ..exceptions import BadPayload, OffloadRefused
from ..sealing import unseal
from ..tasks import JobContext, task
from . import classviews, sensitive
from .capture import delete_uploads, registered_view, verify
from .classviews import find_class
from .messages import OFFLOAD_FUNCTION
from .responses import response_to_result
from .sessions import session_user


def find_view(path: str) -> Callable[..., Any] | type:
    """The ``@offload`` function, or the offloaded class, at ``path``."""
    module, _, _ = path.partition(":")
    if registered_view(path) is None:
        try:
            import_module(module)
        except ImportError as exc:
            raise BadPayload(f"cannot import the view module {module!r}: {exc}") from exc
    view = registered_view(path)
    if view is None:
        cls = find_class(path)
        if cls is not None:
            return cls
        raise BadPayload(f"{path} is not a view decorated with @offload")
    return view


# -- the worker side ------------------------------------------------------------------------
class OffloadContext:
    """``request.gearattach`` inside an offloaded view: report progress, data and a stream.

    ``stream(chunk)`` appends to the job's stream (:meth:`~django_gearattach.tasks.
    JobContext.stream`): the processing page shows the text as it comes, in every tab.

    The methods work in sync and async views alike; in an async view they are queued
    behind the view and done by the time it returns (``await request.gearattach.
    aprogress(...)`` waits for each one instead).
    """

    def __init__(self, job: JobContext, view: str = "") -> None:
        self.job = job
        self.key = job.key
        #: The dotted path of the view being run (its own ``dispatch`` then runs it).
        self.view = view
        self._pending: list[asyncio.Task[None]] = []

    def progress(self, numerator: int, denominator: int) -> None:
        self._call(self.job.progress, numerator, denominator)

    def data(self, value: Any) -> None:
        self._call(self.job.data, value)

    def warning(self, message: str) -> None:
        self._call(self.job.warning, message)

    def stream(self, chunk: Any) -> None:
        self._call(self.job.stream, chunk)

    async def aprogress(self, numerator: int, denominator: int) -> None:
        await sync_to_async(self.job.progress)(numerator, denominator)

    async def adata(self, value: Any) -> None:
        await sync_to_async(self.job.data)(value)

    async def astream(self, chunk: Any) -> None:
        await sync_to_async(self.job.stream)(chunk)

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
    post_data, encoded = sensitive.restore(data)
    body = base64.b64decode(encoded) if encoded else b""
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
        **_sealed_headers(data),
    }
    request = WSGIRequest(environ)
    if post_data is not None:
        post = QueryDict(mutable=True)
        for name, value in post_data:
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
    # The web process enforced CSRF before submitting; the rebuilt request has no cookie.
    request._dont_enforce_csrf_checks = True  # type: ignore[attr-defined]
    _attach_user_and_session(request, data)
    request.gearattach = context  # type: ignore[attr-defined]
    return request


def _sealed_headers(data: dict[str, Any]) -> dict[str, str]:
    headers = unseal(data["sealed_headers"]) if data.get("sealed_headers") else {}
    if not isinstance(headers, dict) or not all(
        isinstance(k, str) and k.startswith("HTTP_") and isinstance(v, str)
        for k, v in headers.items()
    ):
        raise BadPayload("the sealed headers of the offloaded request are malformed")
    return headers


def _attach_user_and_session(request: WSGIRequest, data: dict[str, Any]) -> None:
    credentials = unseal(data["sealed"]) if data.get("sealed") else {}
    if not isinstance(credentials, dict):
        raise BadPayload("the sealed credentials of the offloaded request are malformed")
    if credentials.get("csrf_cookie"):
        request.META["CSRF_COOKIE"] = credentials["csrf_cookie"]
    if apps.is_installed("django.contrib.sessions"):
        store = import_module(settings.SESSION_ENGINE).SessionStore
        request.session = store(credentials.get("session_key"))
    if apps.is_installed("django.contrib.auth"):
        from django.contrib.auth.models import AnonymousUser

        user: Any = AnonymousUser()
        if data.get("user_id") is not None:
            user = _requesting_user(request, data["user_id"], bool(data.get("session_login")))
        request.user = user
        if user.is_authenticated:
            # Django REST framework authenticates this request as its user: the web
            # process did check the credentials, which the worker never sees.
            request._force_auth_user = user  # type: ignore[attr-defined]

        async def auser() -> Any:
            return user

        request.auser = auser
    if apps.is_installed("django.contrib.messages") and not data.get("shared"):
        from django.contrib.messages.storage import default_storage as message_storage

        # The project's message storage, as MessageMiddleware would use it: a cookie it
        # sets is kept with the response (sealed) and reaches the browser with it.
        request._messages = message_storage(request)  # type: ignore[attr-defined]


def _requesting_user(request: WSGIRequest, user_id: Any, session_login: bool) -> Any:
    """The user who made the request, if they still may; else :class:`OffloadRefused`.

    When they were signed in through the session, Django's ``get_user`` decides, as
    for the next request from that browser: the session must still hold the login
    (a logout empties it), the authentication backend must still accept the user (the
    default one refuses inactive users) and the session's password hash must match (a
    password change signs the session out). Otherwise the user must exist and be
    active.
    """
    from django.contrib.auth import get_user_model

    user: Any
    if session_login:
        # Not moved to a new key (SECRET_KEY_FALLBACKS): the browser's cookie names this
        # one, and no response from here sets a session cookie.
        user = session_user(request.session)
    else:
        model = get_user_model()
        user = model._default_manager.filter(pk=user_id).first()
        if user is not None and not getattr(user, "is_active", True):
            user = None
    if user is None or not user.is_authenticated or str(user.pk) != str(user_id):
        raise OffloadRefused(
            "the user who made this request is no longer signed in with that session, or "
            "is inactive: the worker does not run a request as a user who could not make "
            "it now. Ask them to send it again."
        )
    return user


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
        if isinstance(view, type):
            response = classviews.run(view, request, args, kwargs)
            if isawaitable(response):  # an async class-based view
                response = async_to_sync(_drained(response, context))()
        elif iscoroutinefunction(view):

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


def _drained(awaitable: Any, context: OffloadContext) -> Callable[[], Any]:
    async def run() -> Any:
        try:
            return await awaitable
        finally:
            await context.drain()

    return run


def _csrf_cookie(request: WSGIRequest, response: HttpResponseBase) -> None:
    """The CSRF cookie a view's ``get_token()`` asked for, as CsrfViewMiddleware sets it."""
    if request.META.get("CSRF_COOKIE_NEEDS_UPDATE") and any(
        m.endswith("CsrfViewMiddleware") for m in settings.MIDDLEWARE
    ):
        CsrfViewMiddleware(lambda r: response).process_response(request, response)


@task(name=OFFLOAD_FUNCTION, bind=True)
def run_offloaded(
    job: JobContext, view: str, request: dict[str, Any], signature: str
) -> dict[str, Any]:
    """Run an ``@offload`` view's body in the worker; return its response as JSON."""
    if not verify(view, request, job.key, signature):
        raise BadPayload(
            "the offloaded request is not signed with this site's SECRET_KEY (or a key in "
            "SECRET_KEY_FALLBACKS): the web processes and the workers must share SECRET_KEY"
        )
    shared = bool(request.get("shared"))
    context = OffloadContext(job, view)
    rebuilt = None
    try:
        rebuilt = rebuild_request(request, context)
        args, kwargs = _arguments(rebuilt, view, request)
        response = call_view(view, rebuilt, args, kwargs)
        if shared and response.status_code >= 400:
            raise OffloadRefused(
                f"the shared view answered {response.status_code}: only a response with a "
                "status below 400 is kept as a shared outcome, so the next request runs the "
                "view again. Check access outside @offload (e.g. @login_required above it)."
            )
        if not shared:
            _keep_session(rebuilt, response)
            _csrf_cookie(rebuilt, response)
        return response_to_result(response, private=not shared)
    finally:
        if request.get("sensitive"):
            sensitive.forget(OFFLOAD_FUNCTION, job.key)
        if rebuilt is not None and rebuilt.method == "POST" and hasattr(rebuilt, "_files"):
            for _, uploads in rebuilt.FILES.lists():
                for upload in uploads:
                    upload.close()
        delete_uploads(request["files"] or {})


def _keep_session(request: WSGIRequest, response: HttpResponseBase) -> None:
    """Save what the view put in the session (and its messages) for the next request."""
    messages = getattr(request, "_messages", None)
    if messages is not None:
        messages.update(response)
    session = getattr(request, "session", None)
    if session is not None and session.modified:
        session.save()
