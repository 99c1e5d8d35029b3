"""``{% load gearattach %}{% gearattach_progress token %}``: the live progress widget."""

from __future__ import annotations

import json
import secrets
from typing import Any

from django import template
from django.core.exceptions import ImproperlyConfigured
from django.urls import NoReverseMatch, get_script_prefix, reverse

from ..web.paths import WEBSOCKET_PATH

register = template.Library()


@register.inclusion_tag("gearattach/widget.html")
def gearattach_progress(
    token: str,
    label: str = "Progress",
    swap: str = "",
    outcome_url: str = "",
    outcome: dict[str, Any] | None = None,
    transports: str = "ws sse poll",
) -> dict[str, Any]:
    """A progress bar, status line, data and outcome for the job ``token`` names.

    ``swap="document"`` replaces the page with an offloaded view's HTML when it is
    ready; ``outcome_url`` becomes the page's URL (reloading it never reruns the job);
    ``outcome`` (a complete/failed message) renders a finished job without a
    connection; ``transports`` lists what the widget tries, in order.
    """
    try:
        urls = {
            name: reverse(f"gearattach:{name}", kwargs={"token": token})
            for name in ("status", "poll", "events", "download")
        }
    except NoReverseMatch:
        raise ImproperlyConfigured(
            "the gearattach widget needs the app's URLs: add "
            'path("gearattach/", include("django_gearattach.urls")) to your URLconf'
        ) from None
    return {
        "id": f"gearattach-{secrets.token_hex(4)}",
        "token": token,
        "label": label,
        "swap": swap,
        "outcome_url": outcome_url,
        "outcome": outcome,
        "result_json": _result_json(outcome),
        "transports": transports,
        "ws_url": f"{get_script_prefix()}{WEBSOCKET_PATH}{token}/",
        **{f"{name}_url": url for name, url in urls.items()},
    }


def _result_json(outcome: dict[str, Any] | None) -> str:
    if not outcome or outcome.get("type") != "complete" or outcome.get("html") is not None:
        return ""
    return json.dumps(outcome.get("result"), indent=2, default=str)
