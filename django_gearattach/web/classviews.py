"""Class-based views behind ``@offload``: found by class path, rebuilt in the worker.

``@method_decorator(offload(...), name="dispatch")`` and
:class:`~django_gearattach.decorators.OffloadMixin` offload a ``View``, any generic view
or a Django REST framework ``APIView``. The web process stores the class's dotted path;
the worker imports the class, builds the view with the ``as_view()`` arguments of the
URL pattern that resolves the request (none when the request's path resolves to
another view), calls ``setup()`` with the URL's arguments and then ``dispatch()``,
which runs the view's body instead of offloading it again.

In the web process, before anything is submitted, the request must be one the view
accepts: a method the view has no handler for gets the view's own 405, and for an
``APIView`` DRF authenticates the request, checks its permissions and its throttles
as it would without ``@offload`` (a refusal is DRF's own 401/403/429). The user DRF
authenticated (a token, a basic-auth user) is who the worker runs the view as, and
whom the job's links are bound to; DRF's throttles are not counted twice.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from django.http import HttpRequest, HttpResponseBase
from django.urls import Resolver404, resolve

from ..exceptions import BadPayload

#: The attribute that marks a class's ``dispatch`` as offloaded.
MARKER = "gearattach_offload"


def class_path(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def find_class(path: str) -> type | None:
    """The offloaded view class at ``path``; None when ``path`` names no class."""
    module_name, _, qualname = path.partition(":")
    try:
        target: Any = import_module(module_name)
    except ImportError as exc:
        raise BadPayload(f"cannot import the view module {module_name!r}: {exc}") from exc
    for part in qualname.split("."):
        target = getattr(target, part, None)
    if not isinstance(target, type):
        return None
    if not getattr(getattr(target, "dispatch", None), MARKER, False):
        raise BadPayload(
            f"{path} is a class whose dispatch() is not offloaded (method_decorator(offload, "
            'name="dispatch") or OffloadMixin)'
        )
    return target


def is_api_view(view: Any) -> bool:
    return callable(getattr(view, "initialize_request", None)) and hasattr(view, "initial")


def prepare(view: Any, request: HttpRequest, args: Any, kwargs: Any, *, revisit: bool) -> Any:
    """What the web process checks before offloading; a response that refuses, else None.

    A ``revisit`` (a GET with a job's token) skips the method check: it asks about the
    job, not the view.
    """
    method = (request.method or "GET").lower()
    allowed = method in view.http_method_names and hasattr(view, method)
    if not is_api_view(view):
        if not allowed and not revisit:
            return view.http_method_not_allowed(request, *args, **kwargs)
        return None
    drf_request = view.initialize_request(request, *args, **kwargs)
    view.args, view.kwargs, view.request = args, kwargs, drf_request
    view.headers = view.default_response_headers
    try:
        view.initial(drf_request, *args, **kwargs)
        if not allowed and not revisit:
            view.http_method_not_allowed(drf_request, *args, **kwargs)  # raises
    except Exception as exc:
        response = view.handle_exception(exc)
        return view.finalize_response(drf_request, response, *args, **kwargs)
    user = drf_request.user
    if user is not None and user.is_authenticated:
        request.user = user  # the job and its links belong to whom DRF authenticated
    return None


def form_classes(view: Any) -> list[Any]:
    """The form a generic editing view uses, when it can be known without a query."""
    form_class = getattr(view, "form_class", None)
    return [form_class] if form_class is not None else []


def form_prefix(view: Any) -> str | None:
    prefix = getattr(view, "prefix", None)
    return prefix if isinstance(prefix, str) else None


def run(cls: type, request: Any, args: Any, kwargs: Any) -> HttpResponseBase:
    """The worker side: build the view as ``as_view()`` would and dispatch the request."""
    initkwargs: dict[str, Any] = {}
    try:
        match = resolve(request.path_info)
    except Resolver404:
        match = None
    if match is not None and getattr(match.func, "view_class", None) is cls:
        initkwargs = dict(getattr(match.func, "view_initkwargs", {}) or {})
    view: Any = cls(**initkwargs)
    if is_api_view(view):
        view.throttle_classes = ()  # counted once already, in the web process
    view.setup(request, *args, **kwargs)
    response: HttpResponseBase = view.dispatch(request, *args, **kwargs)
    return response
