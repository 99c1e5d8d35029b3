"""The dashboard page in the admin (``job/dashboard/``), with the job list's permissions.

The page and its HTTP form (``?panels=1``, what the page polls without websockets) draw
their panels from a per-process cache kept ``DASHBOARD_REFRESH`` seconds: concurrent
viewers share one snapshot (three queries on the job table and a gearmand probe)
instead of computing one each, and a viewer may ask at most :data:`RATE` times per
``DASHBOARD_REFRESH`` seconds (HTTP 429 beyond).
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict, deque
from typing import TYPE_CHECKING, Any

from django.core.exceptions import PermissionDenied
from django.core.signals import setting_changed
from django.dispatch import receiver
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest, JsonResponse
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.translation import gettext as _

from ..conf import conf
from ..web.paths import WEBSOCKET_PATH
from . import panels
from .queries import PERIODS, snapshot

if TYPE_CHECKING:
    from ..admin import JobAdmin

#: Requests one user may make per ``DASHBOARD_REFRESH`` seconds (a few open tabs).
RATE = 4

_lock = threading.Lock()
_panels: dict[tuple[str, str], tuple[float, dict[str, str]]] = {}
_building: dict[tuple[str, str], threading.Lock] = {}
_asked: defaultdict[Any, deque[float]] = defaultdict(deque)


def cached_panels(period: str, changelist: str) -> dict[str, str]:
    """The panels of ``period``: one computation at a time per period, its result kept
    ``DASHBOARD_REFRESH`` seconds for every viewer of this process."""
    key = (period, changelist)
    with _lock:
        building = _building.setdefault(key, threading.Lock())
    with building:  # a viewer who comes while they are computed waits for them
        found = _panels.get(key)
        if found is not None and time.monotonic() - found[0] < conf.DASHBOARD_REFRESH:
            return found[1]
        html = panels.render(snapshot(period), panels.servers(), changelist)
        _panels[key] = (time.monotonic(), html)
        return html


def forget() -> None:
    """Drop the cached panels and the per-user counts (tests, a settings change)."""
    with _lock:
        _panels.clear()
        _asked.clear()


@receiver(setting_changed)
def _on_setting_changed(setting: str, **kwargs: Any) -> None:
    if setting == "GEARATTACH":  # the panels may draw differently now (tracing links)
        forget()


def _too_soon(user_id: Any) -> float:
    """Seconds until this user may ask again (0: now), counting this request."""
    window, now = conf.DASHBOARD_REFRESH, time.monotonic()
    with _lock:
        asked = _asked[user_id]
        while asked and now - asked[0] >= window:
            asked.popleft()
        if len(asked) >= RATE:
            return window - (now - asked[0])
        asked.append(now)
        return 0.0


def urls(model_admin: JobAdmin) -> list[URLPattern]:
    """The dashboard's URL, for ``JobAdmin.get_urls``."""
    opts = model_admin.opts
    return [
        path(
            "dashboard/",
            model_admin.admin_site.admin_view(lambda request: dashboard(model_admin, request)),
            name=f"{opts.app_label}_{opts.model_name}_dashboard",
        )
    ]


def dashboard(model_admin: JobAdmin, request: HttpRequest) -> HttpResponse:
    """The page; with ``?panels=1``, its panels as JSON (the page's polling fallback)."""
    if not model_admin.has_view_permission(request):
        raise PermissionDenied
    period = request.GET.get("period", "hour")
    if period not in PERIODS:
        return HttpResponseBadRequest(
            _("period must be one of: %(periods)s") % {"periods": ", ".join(PERIODS)},
            content_type="text/plain; charset=utf-8",
        )
    wait = _too_soon(request.user.pk)
    if wait:
        refused = HttpResponse(
            _("Too many dashboard requests; the panels refresh on their own."),
            status=429,
            content_type="text/plain; charset=utf-8",
        )
        refused["Retry-After"] = str(max(1, round(wait)))
        return refused
    site = model_admin.admin_site.name
    changelist = panels.changelist_url(site)
    html = cached_panels(period, changelist)
    if request.GET.get("panels"):
        return JsonResponse({"type": "dashboard", "panels": html, "at": timezone.now()})
    context: dict[str, Any] = {
        **model_admin.admin_site.each_context(request),
        "opts": model_admin.opts,
        "title": _("Jobs dashboard"),
        "subtitle": None,
        "period": period,
        "periods": list(PERIODS),
        "panels": html,
        "refresh": conf.DASHBOARD_REFRESH,
        "ws_path": f"/{WEBSOCKET_PATH}dashboard/?period={period}",
        "poll_url": f"{request.path}?period={period}&panels=1",
        "changelist_url": changelist or reverse(f"{site}:index"),
        "has_view_permission": True,
    }
    request.current_app = site
    return TemplateResponse(request, "admin/django_gearattach/job/dashboard.html", context)
