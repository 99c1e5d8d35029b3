"""``{% load gearattach %}{% gearattach_progress token %}``: the live progress widget."""

from __future__ import annotations

import json
import secrets
from typing import Any

from django import template
from django.core.exceptions import ImproperlyConfigured
from django.urls import NoReverseMatch, get_script_prefix, reverse
from django.utils.translation import gettext

from ..web import assets
from ..web.messages import GENERIC_ERROR, PUBLIC_ERRORS
from ..web.paths import WEBSOCKET_PATH
from ..web.positions import parse_position

register = template.Library()


@register.inclusion_tag("gearattach/widget.html")
def gearattach_progress(
    token: str,
    label: str = "",
    swap: str = "",
    outcome_url: str = "",
    outcome: dict[str, Any] | None = None,
    transports: str = "ws sse poll",
    stream_text: str = "",
    stream_after: str = "",
) -> dict[str, Any]:
    """A progress bar, status line, data and outcome for the job ``token`` names.

    ``swap="document"`` replaces the page with an offloaded view's HTML when it is
    ready; ``outcome_url`` becomes the page's URL (reloading it never reruns the job);
    ``outcome`` (a complete/failed message) renders a finished job without a
    connection; ``transports`` lists what the widget tries, in order.
    ``stream_text`` is the text a streaming job has sent so far and ``stream_after``
    its position (``"R:N"``, see :mod:`django_gearattach.web.positions`): the widget
    shows the text at once and follows the stream after it.
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
        "strings": json.dumps(widget_strings(), ensure_ascii=False),
        "js_url": assets.url("gearattach.js"),
        "css_url": assets.url("gearattach.css"),
        "token": token,
        "label": label or gettext("Progress"),
        "swap": swap,
        "outcome_url": outcome_url,
        "outcome": outcome,
        "result_json": _result_json(outcome),
        "transports": transports,
        "stream_text": stream_text,
        "stream_after": stream_after if parse_position(stream_after) is not None else "",
        "ws_url": f"{get_script_prefix()}{WEBSOCKET_PATH}{token}/",
        **{f"{name}_url": url for name, url in urls.items()},
    }


def widget_strings() -> dict[str, Any]:
    """Every text the widget's script shows, in the active language.

    ``%(name)s`` placeholders are filled in the browser. ``errors`` translates the
    app's own failure texts, which arrive in English (see
    :data:`~django_gearattach.web.messages.PUBLIC_ERRORS`).
    """
    return {
        "waiting": gettext("Waiting for the job to start…"),
        "working": gettext("Working…"),
        # Translators: what a screen reader says of the progress bar once a job started.
        "started": gettext("Started"),
        "step": gettext("Step %(numerator)s of %(denominator)s (%(percent)s%%)"),
        # Translators: what a screen reader says of the progress bar: "3 of 12".
        "fraction": gettext("%(numerator)s of %(denominator)s"),
        "done": gettext("Done."),
        "doneShort": gettext("Done"),
        "failed": gettext("Failed."),
        "stopped": gettext("Stopped"),
        "jobFailed": gettext("The job failed."),
        "unserved": gettext(
            "No worker is running for %(function)s: the job starts when one does."
        ),
        "refused": gettext(
            "You cannot follow this job: the link is invalid, expired or not yours."
        ),
        "gone": gettext("This job no longer exists."),
        "unsupported": gettext("This browser cannot follow the job; reload the page later."),
        "download": gettext("Download %(name)s"),
        "downloadResult": gettext("Download the result"),
        "finishedPage": gettext("The finished page"),
        # Translators: what a screen reader says of the progress bar when a newer request
        # replaced the job followed so far (latest wins).
        "startingOver": gettext("Starting over"),
        "superseded": gettext("Starting over with the newer request…"),
        "errors": {error: gettext(error) for error in (GENERIC_ERROR, *sorted(PUBLIC_ERRORS))},
    }


@register.filter
def gearattach_error(error: str) -> str:
    """A failure's text for the page: the app's own ones in the active language."""
    return gettext(error) if error == GENERIC_ERROR or error in PUBLIC_ERRORS else error


def _result_json(outcome: dict[str, Any] | None) -> str:
    if not outcome or outcome.get("type") != "complete" or outcome.get("html") is not None:
        return ""
    return json.dumps(outcome.get("result"), indent=2, default=str)
