"""The dashboard page in the admin (``job/dashboard/``), with the job list's permissions."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.core.exceptions import PermissionDenied
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
    site = model_admin.admin_site.name
    changelist = panels.changelist_url(site)
    html = panels.render(snapshot(period), panels.servers(), changelist)
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
