"""``@offload``: run a slow view in a worker and answer with a live processing page.

.. code-block:: python

    @offload(key=lambda request: request.GET.get("year"))
    def report(request):
        for step in range(10):
            ...
            request.gearattach.progress(step + 1, 10)
        return render(request, "report.html", {...})

The web request stores the request (method, path, GET/POST, headers, user, session,
uploads), submits it as a ``gearattach.offload`` job, and returns the processing page
at once. The worker rebuilds the request and calls the view's body; the page then
shows the view's real response (its HTML, its redirect, or a download link).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import wraps
from inspect import iscoroutinefunction
from typing import Any, TypeVar, overload

from asgiref.sync import sync_to_async
from django.conf import settings
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseBase
from django.utils.cache import patch_vary_headers

from .capture import delete_uploads, register_view, save_uploads, serialise_request, sign
from .conf import conf
from .exceptions import SubmitFailed
from .models import Job, Status
from .payload import new_key
from .processing import TOKEN_PARAM, outcome_response, processing_response
from .sealing import keyed_hash
from .submission import submit
from .tokens import Identity, check_token, token_for
from .wire import OFFLOAD_FUNCTION

V = TypeVar("V", bound=Callable[..., Any])
#: Seconds a request refused for a full queue is asked to wait (``Retry-After``).
QUEUE_FULL_RETRY_AFTER = 30
KeyFunction = Callable[[HttpRequest], "str | None"]


@dataclass(frozen=True)
class Options:
    template: str | None
    priority: str | None
    key: KeyFunction | None
    shared: bool
    accept_files: bool


@overload
def offload(view: V, /) -> V: ...
@overload
def offload(
    *,
    template: str | None = None,
    priority: str | None = None,
    key: KeyFunction | None = None,
    shared: bool = False,
    accept_files: bool = False,
) -> Callable[[V], V]: ...


def offload(
    view: V | None = None,
    /,
    *,
    template: str | None = None,
    priority: str | None = None,
    key: KeyFunction | None = None,
    shared: bool = False,
    accept_files: bool = False,
) -> V | Callable[[V], V]:
    """Run the decorated view in a ``gearworker``; show a live processing page meanwhile.

    ``template``: the processing page (default ``gearattach/processing.html``; it gets
    ``token`` for ``{% gearattach_progress token %}``). ``priority``: "high",
    "normal" or "low". ``key``: a function of the request; requests with the same key
    attach to one job instead of starting two, and once it has finished they get its
    stored response (a failed one runs again). Unless ``shared``, keys and pages are
    per user (or per session for anonymous visitors).

    ``shared=True``: everyone asking with the same key follows the same job, and gets
    the same response. The view then runs as an anonymous visitor without a session
    (so no one's name, session data or CSRF token can end up in everyone's page), and
    only a response with a status below 400 is kept; put access checks in decorators
    above ``@offload``, which run for every requester.

    ``accept_files``: store uploads for the worker (default: refuse a request with
    files with HTTP 400; files the view never reads would otherwise wait in storage).
    """
    options = Options(template, priority, key, shared, accept_files)

    def decorate(func: V) -> V:
        path = register_view(func)
        if iscoroutinefunction(func):

            @wraps(func)
            async def async_wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
                return await sync_to_async(_handle)(options, path, request, args, kwargs)

            async_wrapper.gearattach_view = path  # type: ignore[attr-defined]
            return async_wrapper  # type: ignore[return-value]

        @wraps(func)
        def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
            return _handle(options, path, request, args, kwargs)

        wrapper.gearattach_view = path  # type: ignore[attr-defined]
        return wrapper  # type: ignore[return-value]

    return decorate(view) if view is not None else decorate


def _handle(
    options: Options, path: str, request: HttpRequest, args: Any, kwargs: Any
) -> HttpResponseBase:
    if request.method in ("GET", "HEAD") and TOKEN_PARAM in request.GET:
        return _revisit(options, path, request, request.GET[TOKEN_PARAM])
    if request.FILES and not options.accept_files:
        return HttpResponse(
            "This page does not accept file uploads; send the form without files.",
            status=400,
            content_type="text/plain; charset=utf-8",
        )
    if _queue_full(options, path, request):
        busy = HttpResponse(
            "Too many requests are waiting to be worked on; try again in a minute.",
            status=503,
            content_type="text/plain; charset=utf-8",
        )
        busy["Retry-After"] = str(QUEUE_FULL_RETRY_AFTER)
        return busy
    user = getattr(request, "user", None)
    owner = user if user is not None and user.is_authenticated else None
    new_session = _save_session(request)
    session_key = (request.session.session_key or "") if hasattr(request, "session") else ""
    job_key = _job_key(options, path, request) or new_key()
    uploads = save_uploads(request) if request.FILES else {}
    data = serialise_request(request, uploads, args, kwargs, shared=options.shared)
    arguments = {"view": path, "request": data, "signature": sign(path, data, job_key)}
    try:
        job = _submit(options, arguments, job_key, owner, session_key)
    except SubmitFailed:
        delete_uploads(uploads)
        job = Job.objects.for_key(OFFLOAD_FUNCTION, job_key).get()  # marked failed
        return processing_response(
            request, job, template=options.template, shared=options.shared, status=503
        )
    if _stored_arguments(job).get("signature") != arguments["signature"]:
        delete_uploads(uploads)  # another request's job runs; ours were never needed
    response: HttpResponseBase
    if job.status == Status.COMPLETE:
        token = token_for(request, job, shared=options.shared)
        response = outcome_response(request, job, token, options.template)
    else:
        response = processing_response(
            request, job, template=options.template, shared=options.shared
        )
    if new_session:
        _set_session_cookie(request, response)
    return response


def _queue_full(options: Options, path: str, request: HttpRequest) -> bool:
    """Whether ``GEARATTACH["OFFLOAD_QUEUE_LIMIT"]`` offloaded requests wait already.

    Back-pressure against a flood (say, cookieless GETs that each start a job): the
    count stops at the limit, and a refused visitor gets no session. Joining a job
    that is queued already is never refused.
    """
    limit = conf.OFFLOAD_QUEUE_LIMIT
    if not limit:
        return False
    queued = Job.objects.filter(function=OFFLOAD_FUNCTION, status=Status.QUEUED)
    if queued.values("pk")[:limit].count() < limit:
        return False
    session = getattr(request, "session", None)
    user = getattr(request, "user", None)
    signed_in = user is not None and user.is_authenticated
    known = options.shared or signed_in or bool(session and session.session_key)
    key = _job_key(options, path, request) if known else None
    return key is None or not queued.filter(key=key).exists()


def _save_session(request: HttpRequest) -> bool:
    """Save the session now; return whether it is new.

    The worker may change the session while this request is still being answered:
    saving it here, and not again in SessionMiddleware, keeps those changes.
    """
    session = getattr(request, "session", None)
    if session is None:
        return False
    new = not session.session_key
    if new or session.modified:
        session.save()
    session.modified = False
    return new


def _set_session_cookie(request: HttpRequest, response: HttpResponseBase) -> None:
    # What SessionMiddleware does for a modified session, which this one no longer is.
    session = request.session
    max_age = None if session.get_expire_at_browser_close() else session.get_expiry_age()
    response.set_cookie(
        settings.SESSION_COOKIE_NAME,
        session.session_key or "",
        max_age=max_age,
        domain=settings.SESSION_COOKIE_DOMAIN,
        path=settings.SESSION_COOKIE_PATH,
        secure=settings.SESSION_COOKIE_SECURE,
        httponly=settings.SESSION_COOKIE_HTTPONLY,
        samesite=settings.SESSION_COOKIE_SAMESITE,
    )
    patch_vary_headers(response, ("Cookie",))


def _submit(
    options: Options, arguments: dict[str, Any], key: str, owner: Any, session_key: str
) -> Job:
    def run(rerun: bool) -> Job:
        return submit(
            OFFLOAD_FUNCTION,
            kwargs=arguments,
            key=key,
            priority=options.priority,
            rerun=rerun,
            owner=owner,
            session_key=session_key,
        )

    job = run(False)
    if job.is_finished and job.status != Status.COMPLETE:
        job = run(True)  # a stored failure is not worth keeping: try again
    return job


def _stored_arguments(job: Job) -> dict[str, Any]:
    arguments = job.arguments if isinstance(job.arguments, dict) else {}
    kwargs = arguments.get("kwargs")
    return kwargs if isinstance(kwargs, dict) else {}


def _job_key(options: Options, path: str, request: HttpRequest) -> str | None:
    if options.key is None:
        return None
    value = options.key(request)
    if value is None:
        return None
    if options.shared:
        owner = "*"
    else:
        identity = Identity.of_request(request)
        owner = f"user:{identity.user_id}" if identity.user_id is not None else ""
        owner = owner or f"session:{identity.session_key}"
    # Keyed, so that nobody can compute another user's key (or download path) from
    # guessable inputs such as a user id and a year.
    digest = keyed_hash("offload-key", "\0".join([path, str(value), owner]))
    return f"offload-{digest[:40]}"


def _revisit(options: Options, path: str, request: HttpRequest, token: str) -> HttpResponseBase:
    """``?gearattach=TOKEN``: the job this page started, never a new run."""
    ref = check_token(token, Identity.of_request(request))  # TokenRefused: HTTP 403
    if ref.function != OFFLOAD_FUNCTION:
        raise Http404("no such job for this page")
    job = Job.objects.for_key(ref.function, ref.key).first()
    if job is None or _stored_arguments(job).get("view") != path:
        raise Http404("no such job for this page")
    if job.is_finished:
        return outcome_response(request, job, token, options.template)
    return processing_response(request, job, template=options.template, token=token)
