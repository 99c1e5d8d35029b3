"""What an offloaded request keeps of the request's headers (security review 3, finding 4).

The review sent credential headers to an offloaded view: ``X-Api-Key``,
``X-Auth-Token``, ``X-Amzn-Oidc-Data`` (an AWS load balancer's signed identity),
``X-Forwarded-User`` (a proxy's authenticated user) and a ``Referer`` carrying a
password-reset token. All five were stored in the record, crossed gearmand in clear
and showed on the admin's job page to a view-only operator. Only an allow-list of
headers travels in clear now; what a view declares it needs, and the ``Referer``,
travel sealed.
"""

from __future__ import annotations

import html
from typing import Any

import pytest
from django.contrib.auth.models import Permission, User
from django.test import Client
from django.urls import reverse

from django_gearattach.models import Job
from tests.web.test_offload import finish, revisit, started
from tests.web.test_offload_security import row_text

pytest_plugins = ["tests.webfixtures"]

pytestmark = pytest.mark.usefixtures("cluster")

CREDENTIALS = {
    "X-Api-Key": "key-5f3c9e1a",
    "X-Auth-Token": "tok-77b2d0c4",
    "X-Amzn-Oidc-Data": "eyJhbGciOiJFUzI1NiJ9.oidc-claims.sig",
    "X-Forwarded-User": "ada@example.com",
}
REFERER = "https://example.com/reset/MQ/c4k-8f2e9a7d1b3c5e7f9a1b/"
DECLARED = {"X-Tenant": "tenant-secret-42"}
PLAIN = {"Accept-Language": "fr-CH", "User-Agent": "test-agent/1.0"}


def seen_by_the_view(page: str) -> dict[str, str]:
    """What the worker's request held, as the view reported it."""
    out = {}
    for part in page.split('<p id="')[1:]:
        name, _, rest = part.partition('">')
        out[name] = html.unescape(rest.partition("</p>")[0])
    return out


def sent(client: Client, path: str, **extra: str) -> tuple[Job, str]:
    headers = {**CREDENTIALS, **DECLARED, **PLAIN, "Referer": REFERER, **extra}
    return started(client.get(path, headers=headers))


def operator_page(job: Job) -> str:
    viewer = User.objects.create_user("viewer", password="pw", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_job"))
    desk = Client()
    desk.force_login(viewer)
    page = desk.get(reverse("admin:django_gearattach_job_change", args=[job.pk]))
    assert page.status_code == 200
    return page.content.decode()


def test_credential_headers_never_reach_the_record_the_wire_or_the_admin(
    client: Client,
) -> None:
    job, token = sent(client, "/offload/headers/")
    secrets = [*CREDENTIALS.values(), *DECLARED.values(), REFERER, "c4k-8f2e9a7d1b3c5e7f9a1b"]
    # What crosses gearmand is the record's arguments: the web process submits them.
    assert not [s for s in secrets if s in row_text(job)]
    done = finish(job)
    assert not [s for s in secrets if s in row_text(done)]
    admin = operator_page(done)
    assert not [s for s in secrets if s in admin]
    assert "fr-CH" in admin  # the allow-listed ones are there, in clear
    # The view still had what it needs: the allow-list, its declared header and the
    # Referer (sealed), never the credentials it did not ask for.
    seen = seen_by_the_view(revisit(client, "/offload/headers/", token).content.decode())
    assert seen["HTTP_ACCEPT_LANGUAGE"] == "fr-CH"
    assert seen["HTTP_USER_AGENT"] == "test-agent/1.0"
    assert seen["HTTP_X_TENANT"] == "tenant-secret-42"
    assert seen["HTTP_REFERER"] == REFERER
    for name in ("X_API_KEY", "X_AUTH_TOKEN", "X_AMZN_OIDC_DATA", "X_FORWARDED_USER"):
        assert seen[f"HTTP_{name}"] == "None"


def test_the_setting_adds_headers_that_travel_in_clear(client: Client, settings: Any) -> None:
    settings.GEARATTACH = {**settings.GEARATTACH, "CAPTURED_HEADERS": ["X-Region"]}
    job, token = sent(client, "/offload/headers/", **{"X-Region": "eu-west"})
    assert job.arguments["kwargs"]["request"]["headers"]["HTTP_X_REGION"] == "eu-west"
    finish(job)
    seen = seen_by_the_view(revisit(client, "/offload/headers/", token).content.decode())
    assert seen["HTTP_X_REGION"] == "eu-west"
    assert seen["HTTP_X_API_KEY"] == "None"
