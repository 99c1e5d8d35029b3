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
at once (a program gets ``202 Accepted``: see :mod:`~django_gearattach.web.api`). The
worker rebuilds the request and calls the view's body; the browser then gets the
view's own response, with its status, headers and cookies.

Class-based views: ``@method_decorator(offload(...), name="dispatch")`` or
:class:`OffloadMixin` (see :mod:`~django_gearattach.web.classviews`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from functools import partial, wraps
from inspect import getattr_static, iscoroutinefunction, ismethod
from typing import Any, ClassVar, TypeVar, overload

from django.core.exceptions import ImproperlyConfigured
from django.http import HttpRequest

from ..policies import DEFAULT, KeyPolicy
from .api import RESULT_PARAM
from .capture import register_view
from .classviews import MARKER, class_path
from .handling import QUEUE_FULL_RETRY_AFTER, KeyFunction, Options, Target, ahandle, handle
from .processing import TOKEN_PARAM
from .sensitive import declared_on

__all__ = ["QUEUE_FULL_RETRY_AFTER", "OffloadMixin", "offload"]

V = TypeVar("V", bound=Callable[..., Any])


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
    sensitive: Iterable[str] = (),
    forms: Iterable[Any] = (),
    headers: Iterable[str] = (),
    max_age: float | None = None,
    stale_while_revalidate: float | None = None,
    on_conflict: str | None = None,
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
    sensitive: Iterable[str] = (),
    forms: Iterable[Any] = (),
    headers: Iterable[str] = (),
    max_age: float | None = None,
    stale_while_revalidate: float | None = None,
    on_conflict: str | None = None,
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
    above ``@offload``, which run for every requester. A request whose key function
    returns None (say, a form with errors) shares nothing: it runs as the visitor's
    own job, and its answer (a 400 with the form's errors) is served to them.

    ``accept_files``: store uploads for the worker (default: refuse a request with
    files with HTTP 400; files the view never reads would otherwise wait in storage).

    ``headers``: request headers the view needs in the worker beyond the few it always
    gets (``Accept``, ``Accept-Language``, ``User-Agent``... and
    ``GEARATTACH["CAPTURED_HEADERS"]``), say ``["X-Tenant"]``: they are sealed in the
    record, as credentials may be.

    The key's policy (:mod:`~django_gearattach.policies`), for views with a ``key``:
    ``max_age`` (seconds) keeps a stored response for that long, then the next request
    runs the view again; ``stale_while_revalidate`` (seconds) serves it for that much
    longer at once, marked "updating", while one refresh runs, and swaps the fresh page
    in when it is ready. ``@offload(key=..., shared=True, max_age=600,
    stale_while_revalidate=60)``: a slow page built at most every ten minutes, never
    waited for in between. ``on_conflict`` (``"follow_up"``, ``"replace"``) as for tasks.
    """
    options = Options(
        template,
        priority,
        key,
        shared,
        accept_files,
        tuple(sensitive),
        tuple(forms),
        headers=tuple(headers),
        policy=_policy(key is not None, on_conflict, max_age, stale_while_revalidate),
    )

    def decorate(func: V) -> V:
        if _is_method_decorator_probe(func):
            return _mark(func)
        view = _bound_view(func)
        if view is not None:
            bound: V = _for_class_view(options, func, view)
            return bound
        target = Target(register_view(func), declared=declared_on(func))
        if iscoroutinefunction(func):

            @wraps(func)
            async def async_wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
                return await ahandle(options, target, request, args, kwargs)

            async_wrapper.gearattach_view = target.path  # type: ignore[attr-defined]
            return async_wrapper  # type: ignore[return-value]

        @wraps(func)
        def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
            return handle(options, target, request, args, kwargs)

        wrapper.gearattach_view = target.path  # type: ignore[attr-defined]
        return wrapper  # type: ignore[return-value]

    return decorate(view) if view is not None else decorate


def _policy(
    keyed: bool,
    on_conflict: str | None,
    max_age: float | None,
    stale_while_revalidate: float | None,
) -> KeyPolicy:
    """The view's key policy; InvalidPolicy for a bad option, ImproperlyConfigured
    for options on a view without a key (every request would get a job of its own)."""
    policy = KeyPolicy.of(on_conflict, max_age, stale_while_revalidate)
    if not policy.is_default and not keyed:
        raise ImproperlyConfigured(
            "@offload(max_age=..., stale_while_revalidate=..., on_conflict=...) needs "
            "key=: without a key every request runs a job of its own, which no other "
            "request shares"
        )
    return policy


def _is_method_decorator_probe(func: Any) -> bool:
    """``method_decorator`` tries each decorator on a dummy function when the class is
    made, to copy the attributes it sets (our marker) onto ``dispatch``."""
    return getattr(func, "__module__", "") == "django.utils.decorators" and (
        getattr(func, "__name__", "") == "dummy"
    )


def _mark(func: V) -> V:
    @wraps(func)
    def marked(*args: Any, **kwargs: Any) -> Any:
        return func(*args, **kwargs)

    setattr(marked, MARKER, True)
    return marked  # type: ignore[return-value]


def _bound_view(func: Any) -> Any:
    """The view instance when ``func`` is a method bound by ``method_decorator``."""
    if isinstance(func, partial) and ismethod(func.func):
        return func.func.__self__
    return None


def running_in_worker(request: Any, path: str) -> bool:
    """Whether ``request`` is the worker's rebuilt request for the view at ``path``."""
    return getattr(getattr(request, "gearattach", None), "view", None) == path


def _for_class_view(options: Options, dispatch: Callable[..., Any], view: Any) -> Any:
    if getattr(dispatch, "__name__", "") != "dispatch":
        raise ImproperlyConfigured(
            f"{class_path(type(view))}: offload a class-based view on dispatch "
            '(method_decorator(offload, name="dispatch")), not on a handler: the link to '
            "the job is a GET, which must reach @offload too. To offload some methods "
            'only, use OffloadMixin with offload_methods = ["post"].'
        )
    target = Target(class_path(type(view)), view=view, declared=declared_on(dispatch))
    asynchronous = bool(getattr(type(view), "view_is_async", False))

    @wraps(dispatch)
    def bound(request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
        if running_in_worker(request, target.path):
            return dispatch(request, *args, **kwargs)
        if asynchronous:
            return ahandle(options, target, request, args, kwargs)
        return handle(options, target, request, args, kwargs)

    return bound


class OffloadMixin:
    """Offload a class-based view: ``class Report(OffloadMixin, TemplateView)``.

    The options of :func:`offload` are class attributes: ``offload_template``,
    ``offload_priority``, ``offload_shared``, ``offload_accept_files``,
    ``offload_sensitive``, ``offload_forms``, ``offload_headers``, ``offload_max_age``,
    ``offload_stale_while_revalidate``, ``offload_on_conflict`` (checked when the class
    is defined), and
    ``offload_methods`` (the methods to offload, say ``["post"]``: others run here as
    usual); the key is :meth:`get_offload_key`
    (by default ``offload_key``, a function of the request, or None). Put the mixin
    first, before the view class, so that its ``dispatch`` runs first.
    """

    offload_template: ClassVar[str | None] = None
    offload_priority: ClassVar[str | None] = None
    offload_key: ClassVar[KeyFunction | None] = None
    offload_shared: ClassVar[bool] = False
    offload_accept_files: ClassVar[bool] = False
    offload_sensitive: ClassVar[Iterable[str]] = ()
    offload_forms: ClassVar[Iterable[Any]] = ()
    offload_headers: ClassVar[Iterable[str]] = ()
    offload_max_age: ClassVar[float | None] = None
    offload_stale_while_revalidate: ClassVar[float | None] = None
    offload_on_conflict: ClassVar[str | None] = None
    #: The HTTP methods offloaded (say ``["post"]`` for a form); None: every method.
    offload_methods: ClassVar[Iterable[str] | None] = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._offload_policy = KeyPolicy.of(
            cls.offload_on_conflict, cls.offload_max_age, cls.offload_stale_while_revalidate
        )

    _offload_policy: ClassVar[KeyPolicy] = DEFAULT

    def get_offload_key(self, request: HttpRequest) -> str | None:
        """The job key of ``request`` (see ``key`` in :func:`offload`); None: a job of its own."""
        key = getattr_static(type(self), "offload_key", None)  # a function, never bound
        if isinstance(key, staticmethod):
            key = key.__func__
        return key(request) if key is not None else None

    def _offloads(self, request: HttpRequest) -> bool:
        if (
            self.offload_methods is None
            or request.GET.get(TOKEN_PARAM)
            or request.GET.get(RESULT_PARAM)
        ):
            return True  # a job's link is always the job's
        return (request.method or "").lower() in {m.lower() for m in self.offload_methods}

    def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
        path = class_path(type(self))
        if running_in_worker(request, path) or not self._offloads(request):
            return super().dispatch(request, *args, **kwargs)  # type: ignore[misc]
        options = Options(
            template=self.offload_template,
            priority=self.offload_priority,
            key=self.get_offload_key,
            shared=self.offload_shared,
            accept_files=self.offload_accept_files,
            sensitive=tuple(self.offload_sensitive),
            forms=tuple(self.offload_forms),
            headers=tuple(self.offload_headers),
            policy=self._offload_policy,
        )
        target = Target(path, view=self)
        if getattr(type(self), "view_is_async", False):
            return ahandle(options, target, request, args, kwargs)
        return handle(options, target, request, args, kwargs)


setattr(OffloadMixin.dispatch, MARKER, True)
