"""The widget's script and style, served from the app's URLs (no static files set-up)."""

from __future__ import annotations

import re

from django.template import engines
from django.test import Client

from django_gearattach.web import assets


def widget_html(token: str = "t") -> str:
    template = engines["django"].from_string(
        "{% load gearattach %}{% gearattach_progress token %}"
    )
    return template.render({"token": token})


def test_the_tag_links_versioned_urls_under_the_apps_own_urls() -> None:
    html = widget_html()
    version = assets.load("gearattach.js")[1]
    assert f'<script src="/gearattach/widget/gearattach.js?v={version}" defer>' in html
    assert re.search(
        r'<link rel="stylesheet" href="/gearattach/widget/gearattach.css\?v=\w+">', html
    )


def test_a_versioned_url_is_cached_for_a_year_and_revalidated_otherwise() -> None:
    client = Client()
    data, version = assets.load("gearattach.js")
    response = client.get(f"/gearattach/widget/gearattach.js?v={version}")
    assert response.status_code == 200
    assert response.content == data
    assert response["Content-Type"] == "text/javascript; charset=utf-8"
    assert "immutable" in response["Cache-Control"]
    assert "max-age=31536000" in response["Cache-Control"]
    assert response["X-Content-Type-Options"] == "nosniff"
    plain = client.get("/gearattach/widget/gearattach.js")
    assert plain["Cache-Control"] == "no-cache"
    again = client.get(
        "/gearattach/widget/gearattach.js", headers={"if-none-match": plain["ETag"]}
    )
    assert again.status_code == 304
    assert again.content == b""
    css = client.get("/gearattach/widget/gearattach.css")
    assert css["Content-Type"] == "text/css; charset=utf-8"


def test_nothing_else_is_served_from_there() -> None:
    client = Client()
    for name in ("../models.py", "admin.css", "gearattach.js.map", "%2e%2e%2fsettings.py"):
        assert client.get(f"/gearattach/widget/{name}").status_code == 404
    assert client.post("/gearattach/widget/gearattach.js").status_code == 405


def test_static_assets_links_them_through_the_static_files(settings) -> None:
    settings.GEARATTACH = {**settings.GEARATTACH, "STATIC_ASSETS": True}
    html = widget_html()
    assert '<script src="/static/gearattach/gearattach.js" defer>' in html
    assert '<link rel="stylesheet" href="/static/gearattach/gearattach.css">' in html
