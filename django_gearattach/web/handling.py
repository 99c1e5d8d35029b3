"""The web side of ``@offload``: a request in, a job submitted or joined, the answer out.

:mod:`~django_gearattach.decorators` wraps views; this module decides, for each
request, what it gets: a refusal (files not accepted, a full queue, a method or a
DRF check the view refuses), the job's stored response, a processing page for a
browser, or for a program the asynchronous request-reply answers of
:mod:`~django_gearattach.web.api`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseBase, JsonResponse
from django.utils.cache import patch_vary_headers
from django.utils.translation import gettext

from ..conf import conf
from ..exceptions import SubmitFailed
from ..models import Job, Status
from ..payload import TRACE, new_key
from ..policies import DEFAULT, KeyPolicy
from ..sealing import keyed_hash
from ..submission import submit
from . import api, classviews, stale, waiting
from . import sensitive as sensitive_fields
from .capture import delete_uploads, save_uploads, serialise_request, sign
from .messages import OFFLOAD_FUNCTION, failed_message
from .processing import TOKEN_PARAM, outcome_response, processing_response, refused_response
from .streams import client_of
from .tokens import Identity, TokenRefused, check_token, token_for
from .uploads import too_large
from .waiting import Deferred

#: Seconds a request refused for a full queue is asked to wait (``Retry-After``).
QUEUE_FULL_RETRY_AFTER = 30
KeyFunction = Callable[[HttpRequest], "str | None"]


@dataclass(frozen=True)
class Options:
    template: str | None = None
    priority: str | None = None
    key: KeyFunction | None = None
    shared: bool = False
    accept_files: bool = False
    sensitive: tuple[str, ...] = ()
    forms: tuple[Any, ...] = ()
    #: Request headers the view needs beyond the captured ones: sealed in the record.
    headers: tuple[str, ...] = ()
    #: What a request does with its key's record (``max_age``, ``stale_while_revalidate``).
    policy: KeyPolicy = DEFAULT


@dataclass(frozen=True)
class Target:
    """What runs in the worker: a function's or a class's dotted path."""

    path: str
    #: The class-based view instance handling this request (None for a function view).
    view: Any = None
    #: Fields that ``sensitive_post_parameters`` marks on the function itself.
    declared: frozenset[str] | str = field(default_factory=frozenset)


def _text(message: str, status: int) -> HttpResponse:
    return HttpResponse(message, status=status, content_type="text/plain; charset=utf-8")


def handle(
    options: Options, target: Target, request: HttpRequest, args: Any, kwargs: Any
) -> HttpResponseBase:
    """Answer one request to an offloaded view (a sync view: a wait holds its thread)."""
    answer = respond(options, target, request, args, kwargs)
    return waiting.wait_then_answer(answer) if isinstance(answer, Deferred) else answer


async def ahandle(
    options: Options, target: Target, request: HttpRequest, args: Any, kwargs: Any
) -> HttpResponseBase:
    """:func:`handle` for an ``async def`` view: a wait holds no thread."""
    answer = await sync_to_async(respond)(options, target, request, args, kwargs)
    if isinstance(answer, Deferred):
        return await waiting.await_then_answer(answer)
    return answer


def respond(
    options: Options, target: Target, request: HttpRequest, args: Any, kwargs: Any
) -> HttpResponseBase | Deferred:
    """The answer to one request, or (``Prefer: wait``) the answer once its job ends."""
    path = target.path
    safe = request.method in ("GET", "HEAD")
    token = request.GET.get(api.RESULT_PARAM) or request.GET.get(TOKEN_PARAM) if safe else None
    if target.view is not None:
        refused: HttpResponseBase | None = classviews.prepare(
            target.view, request, args, kwargs, revisit=bool(token)
        )
        if refused is not None:
            return refused
    try:
        if safe and api.RESULT_PARAM in request.GET:
            return _result(options, path, request, request.GET[api.RESULT_PARAM])
        if safe and TOKEN_PARAM in request.GET:
            return _revisit(options, path, request, request.GET[TOKEN_PARAM])
    except TokenRefused as refusal:
        return refused_response(request, refusal, program=not api.wants_html(request))
    program = not api.wants_html(request)
    refused = too_large(request)
    if refused is not None:
        return refused
    answers = safe and _answers_from_record(options, request)
    known_key = _job_key(options, path, request) if answers else None
    if known_key is not None:
        # A stored response that answers (fresh, or stale while it refreshes): one read.
        kept_answer = stale.from_record(
            request,
            known_key,
            options.policy,
            shared=options.shared,
            template=options.template,
            html=not program,
        )
        if kept_answer is not None:
            return kept_answer
    if request.FILES and not options.accept_files:
        return _text(
            gettext("This page does not accept file uploads; send the form without files."), 400
        )
    if _queue_full(options, path, request):
        busy = _text(
            gettext("Too many requests are waiting to be worked on; try again in a minute."), 503
        )
        busy["Retry-After"] = str(QUEUE_FULL_RETRY_AFTER)
        return busy
    user = getattr(request, "user", None)
    owner = user if user is not None and user.is_authenticated else None
    new_session = _save_session(request)
    session_key = (request.session.session_key or "") if hasattr(request, "session") else ""
    job_key = _job_key(options, path, request)
    # A request the key function gives no key (say, a form with errors) names nothing
    # to share: its job is the visitor's own, and its answer (a 400) is theirs.
    shared = options.shared and job_key is not None
    job_key = job_key or new_key()
    uploads = save_uploads(request) if request.FILES else {}
    sensitive = sensitive_fields.fields_of(
        request,
        target.declared,
        frozenset(options.sensitive),
        sensitive_fields.password_fields(options.forms),
        sensitive_fields.password_fields(
            classviews.form_classes(target.view), classviews.form_prefix(target.view)
        ),
    )
    data = serialise_request(
        request,
        uploads,
        args,
        kwargs,
        shared=shared,
        sensitive=sensitive,
        headers=options.headers,
    )
    if conf.TRACING:
        _carry_trace(data, job_key)
    arguments = {"view": path, "request": data, "signature": sign(path, data, job_key)}
    response: HttpResponseBase
    try:
        job = _submit(options, arguments, job_key, owner, session_key)
    except SubmitFailed:
        delete_uploads(uploads)
        sensitive_fields.forget(OFFLOAD_FUNCTION, job_key)  # it will never run
        job = Job.objects.for_key(OFFLOAD_FUNCTION, job_key).get()  # marked failed
        if program:
            response = JsonResponse(
                {"status": job.status, "error": failed_message(job.error)["error"]}, status=503
            )
            response["Retry-After"] = str(QUEUE_FULL_RETRY_AFTER)
            return response
        return processing_response(
            request, job, template=options.template, shared=shared, status=503
        )
    stored = {
        _stored_arguments(job).get("signature"),
        _stored_arguments(job, "next").get("signature"),
    }
    if arguments["signature"] not in stored:
        delete_uploads(uploads)  # another request's job runs; ours were never needed
    token = token_for(request, job, shared=shared)

    kept = None if job.status == Status.COMPLETE else options.policy.stale(job)

    def answer(job: Job) -> HttpResponseBase:
        if job.status == Status.COMPLETE:
            response = outcome_response(request, job, token, options.template)
        elif kept is not None:  # stale while it revalidates: the stored response at once
            response = stale.stale_response(request, job, kept, token, html=not program)
        elif program:
            response = api.accepted(request, job, token)
        else:
            response = processing_response(request, job, template=options.template, token=token)
        # What a cache must tell apart: a page for browsers, a 202 or a waited-for answer.
        patch_vary_headers(response, ("Accept", "Prefer"))
        if new_session:
            _set_session_cookie(request, response)
        return response

    wait = api.prefer_wait(request) if program and kept is None else None
    if wait is not None and not job.is_finished:
        # A session this request created says nothing of who asks: count its address.
        identity = Identity() if new_session else Identity.of_request(request)
        return Deferred(job, wait, client_of(identity, request.META.get("REMOTE_ADDR")), answer)
    return answer(job)


def _carry_trace(data: dict[str, Any], key: str) -> None:
    """The caller's trace context, in the request: signed with it, as the worker checks."""
    from ..tracing.carrier import carrier_for  # OpenTelemetry, only with GEARATTACH["TRACING"]

    carrier = carrier_for(OFFLOAD_FUNCTION, key)
    if carrier is not None:
        data[TRACE] = carrier


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
    """Save the session now; return whether the browser must be sent its cookie.

    The worker may change the session while this request is still being answered:
    saving it here, and not again in SessionMiddleware, keeps those changes. The
    cookie goes with the answer when the session is new, or has a new key (Django
    moves a session to a new key when a key in ``SECRET_KEY_FALLBACKS`` verified it:
    without the cookie, the browser would be signed out).
    """
    session = getattr(request, "session", None)
    if session is None:
        return False
    new = not session.session_key
    if new or session.modified:
        session.save()
    session.modified = False
    return new or request.COOKIES.get(settings.SESSION_COOKIE_NAME) != session.session_key


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
    policy = options.policy

    def run(rerun: bool) -> Job:
        return submit(
            OFFLOAD_FUNCTION,
            kwargs=arguments,
            key=key,
            priority=options.priority,
            rerun=rerun,
            owner=owner,
            session_key=session_key,
            on_conflict=policy.on_conflict,
            max_age=policy.max_age,
            stale_while_revalidate=policy.stale_while_revalidate or None,
        )

    job = run(False)
    if job.is_finished and job.status != Status.COMPLETE:
        job = run(True)  # a stored failure is not worth keeping: try again
    return job


def _stored_arguments(job: Job, run: str = "current") -> dict[str, Any]:
    """The request stored for the record's current run, or for the run waiting to
    follow it (``run="next"``: a follow-up or a replacement, see runs.py)."""
    stored = job.arguments if run == "current" else job.next_arguments
    arguments = stored if isinstance(stored, dict) else {}
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


def _job_for(path: str, request: HttpRequest, token: str) -> Job:
    ref = check_token(token, Identity.of_request(request))  # TokenRefused: HTTP 403
    if ref.summary:
        # The admin's token follows the job; the response, its headers and its cookies
        # are its user's, and these links serve nothing else.
        raise TokenRefused(
            "an admin's summary token follows a job's progress and outcome; it never "
            "opens the view's response"
        )
    if ref.function != OFFLOAD_FUNCTION:
        raise Http404("no such job for this page")
    job = Job.objects.for_key(ref.function, ref.key).first()
    if job is None or not ref.names(job) or _stored_arguments(job).get("view") != path:
        raise Http404("no such job for this page")
    return job


def _revisit(
    options: Options, path: str, request: HttpRequest, token: str
) -> HttpResponseBase | Deferred:
    """``?gearattach=TOKEN``: the job this page started, never a new run.

    A browser gets the processing page, or the view's stored response once the job
    has finished; a program gets the job's status (:func:`~django_gearattach.web.api.status`).
    """
    job = _job_for(path, request, token)
    if not api.wants_html(request):
        wait = api.prefer_wait(request)
        if wait is not None and not job.is_finished:
            client = client_of(Identity.of_request(request), request.META.get("REMOTE_ADDR"))
            return Deferred(job, wait, client, lambda job: api.status(request, job, token))
        return api.status(request, job, token)
    if job.is_finished:
        return outcome_response(request, job, token, options.template)
    if (kept := options.policy.stale(job)) is not None:
        return stale.stale_response(request, job, kept, token)
    return processing_response(request, job, template=options.template, token=token)


def _answers_from_record(options: Options, request: HttpRequest) -> bool:
    """Whether a stored response may answer before anything is saved: the view keeps
    outcomes for a ``max_age``, and the request's job key is known already (a shared
    view's, a signed-in user's, a session's that exists)."""
    if options.key is None or options.policy.max_age is None:
        return False
    user = getattr(request, "user", None)
    session = getattr(request, "session", None)
    signed_in = user is not None and user.is_authenticated
    return options.shared or signed_in or bool(session is not None and session.session_key)


def _result(options: Options, path: str, request: HttpRequest, token: str) -> HttpResponseBase:
    """``?gearattach-result=TOKEN``: the view's own response, once the job is complete."""
    job = _job_for(path, request, token)
    if job.status != Status.COMPLETE:
        return api.not_ready(request, job, token)
    return outcome_response(request, job, token, options.template)
