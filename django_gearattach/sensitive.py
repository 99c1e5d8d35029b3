"""Sensitive form fields of an offloaded request: sealed at rest, gone once the view ran.

An offloaded request's POST data waits in the job record until a worker runs it. The
fields that must not be readable there (passwords, card numbers) are found from:

* Django's :func:`~django.views.decorators.debug.sensitive_post_parameters`, placed
  above ``@offload`` (or before it in a ``method_decorator`` list) or directly on the
  function that ``@offload`` decorates;
* the password inputs (:class:`~django.forms.PasswordInput`) of the forms the view
  uses: a class-based view's ``form_class``, or the ``forms=`` of ``@offload``;
* the names given as ``@offload(sensitive=[...])``.

They are taken out of the stored POST data and sealed (:mod:`~django_gearattach.
sealing`: encrypted under a key derived from ``SECRET_KEY``, fallbacks honoured).
A body that is not a form (JSON from an API client) is sealed whole when the view
names any sensitive field. The admin shows "(encrypted)" for them, and once the
view has run the worker removes them from the record (``"sensitive_removed"``): the
request can then not be retried from the admin, which says so.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from django import forms
from django.http import HttpRequest

from .models import Job
from .sealing import seal, unseal

ALL = "__ALL__"
#: The name Django gives the wrapper made by ``sensitive_post_parameters``.
_DJANGO_WRAPPER = "sensitive_post_parameters_wrapper"
#: The decorator factory that builds it, and the wrapper ``method_decorator`` makes.
_DJANGO_FACTORY = "sensitive_post_parameters.<locals>"
_METHOD_WRAPPER = "_wrapper"


def declared_on(view: Callable[..., Any]) -> frozenset[str] | str:
    """Parameters that ``sensitive_post_parameters`` below ``@offload`` names, on
    ``view`` or in the ``method_decorator`` that wraps a ``dispatch``: read from the
    closures Django builds."""
    marked: list[Any] = []  # the ``parameters`` of each marking found
    current: Any = view
    for _ in range(20):  # a chain of wrappers, never a cycle
        code = getattr(current, "__code__", None)
        cells = _cells(current)
        if code is not None and code.co_name == _DJANGO_WRAPPER and "parameters" in cells:
            marked.append(cells["parameters"])
        # A ``method_decorator(sensitive_post_parameters(...), name="dispatch")``
        # below the one that applies ``offload``: Django builds the wrapper only when
        # dispatch runs, so read the decorator that method_decorator holds.
        if code is not None and code.co_name == _METHOD_WRAPPER and "decorators" in cells:
            for decorator in cells["decorators"]:
                inner = _cells(decorator)
                qualname = getattr(decorator, "__qualname__", "")
                if qualname.startswith(_DJANGO_FACTORY) and "parameters" in inner:
                    marked.append(inner["parameters"])
        current = getattr(current, "__wrapped__", None)
        if current is None:
            break
    if any(not parameters for parameters in marked):
        return ALL
    found = {str(name) for parameters in marked for name in parameters}
    return frozenset(found)


def _cells(function: Any) -> dict[str, Any]:
    """The closure variables of ``function`` by name (none for other callables)."""
    code = getattr(function, "__code__", None)
    closure = getattr(function, "__closure__", None)
    if code is None or not closure:
        return {}
    try:
        return {
            name: cell.cell_contents for name, cell in zip(code.co_freevars, closure, strict=True)
        }
    except ValueError:  # an empty cell
        return {}


def password_fields(form_classes: Iterable[Any], prefix: str | None = None) -> set[str]:
    """The POST names of the password inputs of ``form_classes``."""
    names = set()
    for form_class in form_classes:
        if not (isinstance(form_class, type) and issubclass(form_class, forms.BaseForm)):
            continue
        form_prefix = prefix if prefix is not None else form_class.prefix
        fields: dict[str, Any] = getattr(form_class, "base_fields", {})
        for name, field in fields.items():
            if isinstance(field.widget, forms.PasswordInput):
                names.add(f"{form_prefix}-{name}" if form_prefix else name)
    return names


def fields_of(
    request: HttpRequest, *known: frozenset[str] | str | set[str]
) -> frozenset[str] | str:
    """Every sensitive name for this request: ``known`` ones and what
    ``sensitive_post_parameters`` above ``@offload`` set on the request."""
    marked = getattr(request, "sensitive_post_parameters", None)
    sources = [*known, marked or ()]
    if any(source == ALL for source in sources):
        return ALL
    return frozenset(name for source in sources for name in source)


def split(
    post: list[list[str]] | None, body: str | None, sensitive: frozenset[str] | str
) -> tuple[list[list[str]] | None, str | None, str | None]:
    """The POST pairs and body to store in clear, and the sealed rest (or None)."""
    if not sensitive:
        return post, body, None
    hidden: dict[str, Any] = {}
    if post is not None:
        kept = [pair for pair in post if sensitive != ALL and pair[0] not in sensitive]
        secret = [pair for pair in post if pair not in kept]
        if secret:
            hidden["post"] = secret
        post = kept
    if body:
        hidden["body"], body = body, None
    return post, body, seal(hidden) if hidden else None


def restore(data: dict[str, Any]) -> tuple[list[list[str]] | None, str | None]:
    """The request's POST pairs and body with the sealed fields back in."""
    post, body = data.get("post"), data.get("body")
    if not data.get("sensitive"):
        return post, body
    hidden = unseal(data["sensitive"])
    if not isinstance(hidden, dict):
        hidden = {}
    if post is not None:
        post = [*post, *hidden.get("post", [])]
    return post, hidden.get("body", body)


def forget(function: str, key: str) -> None:
    """Remove the sealed fields from the record of an offloaded request that has run."""
    record = Job.objects.for_key(function, key).only("pk", "arguments").first()
    arguments = record.arguments if record is not None else None
    kwargs = arguments.get("kwargs") if isinstance(arguments, dict) else None
    request = kwargs.get("request") if isinstance(kwargs, dict) else None
    if not (isinstance(arguments, dict) and isinstance(kwargs, dict)):
        return
    if record is None or not isinstance(request, dict) or not request.get("sensitive"):
        return
    request = {**request, "sensitive": None, "sensitive_removed": True}
    arguments = {**arguments, "kwargs": {**kwargs, "request": request}}
    Job.objects.filter(pk=record.pk).update(arguments=arguments)
