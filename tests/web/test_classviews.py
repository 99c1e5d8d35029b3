"""Class-based views behind ``@offload``: View, generic views and DRF's APIView, each run
by a real worker through a real gearmand."""

from __future__ import annotations

import base64

import pytest
from django.contrib.auth.models import User
from django.core.exceptions import ImproperlyConfigured
from django.test import Client

from django_gearattach.models import Job
from django_gearattach.web.api import RESULT_PARAM
from tests.web.test_offload import finish, revisit, started

pytest_plugins = ["tests.webfixtures"]

pytestmark = pytest.mark.usefixtures("cluster")

JSON = {"Accept": "application/json"}


def basic(username: str, password: str) -> dict[str, str]:
    raw = base64.b64encode(f"{username}:{password}".encode()).decode()
    return {"Authorization": f"Basic {raw}"}


def test_method_decorator_on_a_view(client: Client) -> None:
    job, token = started(client.get("/classes/inventory/7/"))
    assert job.arguments["kwargs"]["view"] == "tests.testapp.classviews:Inventory"
    finish(job)
    html = revisit(client, "/classes/inventory/7/", token).content.decode()
    assert '<p id="shelf">7 int</p>' in html  # the URL's converter, again in the worker
    assert '<p id="worker">True</p>' in html
    job, token = started(client.post("/classes/inventory/7/", {"item": "bolts"}))
    finish(job)
    html = revisit(client, "/classes/inventory/7/", token).content.decode()
    assert '<p id="method">POST</p><p id="item">bolts</p>' in html


def test_a_method_the_view_has_not_is_refused_before_anything_runs(client: Client) -> None:
    response = client.delete("/classes/inventory/7/")
    assert response.status_code == 405
    assert sorted(response["Allow"].split(", ")) == ["GET", "HEAD", "OPTIONS", "POST"]
    assert not Job.objects.exists()


def test_the_mixin_with_as_view_arguments(client: Client) -> None:
    user = User.objects.create_user("ada", password="pw")
    client.force_login(user)
    job, token = started(client.get("/classes/greeting/", {"name": "Grace"}))
    finish(job)
    html = revisit(client, "/classes/greeting/", token).content.decode()
    # greeting="Bonjour" came from as_view() in the URLconf, found again by the worker.
    assert '<h1 id="greeting">Bonjour, Grace</h1>' in html
    assert '<p id="user">ada</p>' in html


def test_a_generic_list_view_with_a_key(client: Client) -> None:
    User.objects.create_user("zoe")
    User.objects.create_user("bob")
    job, token = started(client.get("/classes/users/"))
    finish(job)
    html = revisit(client, "/classes/users/", token).content.decode()
    assert '<ul id="users"><li>bob</li><li>zoe</li></ul>' in html
    again = client.get("/classes/users/")  # the key: the stored page, nothing runs
    assert again.status_code == 200
    assert again.content.decode() == html
    assert Job.objects.count() == 1


def test_drf_api_view_authenticates_in_the_web_process(client: Client) -> None:
    User.objects.create_user("ada", password="s3cret")
    # DRF refuses as it would without @offload, and nothing is submitted.
    assert client.get("/api/figures/2024/", headers=JSON).status_code in (401, 403)
    assert (
        client.get("/api/figures/2024/", headers={**JSON, **basic("ada", "wrong")}).status_code
        == 401
    )
    assert not Job.objects.exists()

    accepted = client.get("/api/figures/2024/", headers={**JSON, **basic("ada", "s3cret")})
    assert accepted.status_code == 202
    job = Job.objects.get()
    assert job.owner.username == "ada"
    assert "Authorization" not in str(job.arguments)
    assert "s3cret" not in str(job.arguments)
    finish(job)
    status_url = accepted["Location"]
    # The status URL goes through DRF's authentication again: without it, refused.
    assert client.get(status_url, headers=JSON).status_code in (401, 403)
    done = client.get(status_url, headers={**JSON, **basic("ada", "s3cret")})
    assert done.status_code == 303
    assert RESULT_PARAM in done["Location"]
    result = client.get(done["Location"], headers={**JSON, **basic("ada", "s3cret")})
    assert result.status_code == 200
    assert result["Content-Type"] == "application/json"
    assert result["X-Report"] == "figures-2024"
    assert result.json() == {"year": 2024, "user": "ada", "total": 42}
    # Another user of the API cannot use ada's links.
    User.objects.create_user("eve", password="pw")
    assert client.get(done["Location"], headers={**JSON, **basic("eve", "pw")}).status_code == 403


def test_drf_post_with_json_and_the_mixin(client: Client) -> None:
    response = client.post(
        "/api/echo/", {"colour": "red"}, content_type="application/json", headers=JSON
    )
    assert response.status_code == 202
    job = Job.objects.get()
    finish(job)
    result = client.get(response["Location"], follow=True, headers=JSON)
    assert result.json() == {"echo": {"colour": "red"}, "worker": True}


def test_an_async_class_based_view(client: Client) -> None:
    job, token = started(client.get("/classes/async/"))
    done = finish(job)
    assert done.progress_numerator == 1
    assert revisit(client, "/classes/async/", token).content == b'<p id="async">pong</p>'


def test_offload_on_a_method_without_method_decorator_says_what_to_do() -> None:
    from django.views import View

    from django_gearattach.web.decorators import offload

    with pytest.raises(TypeError, match="method_decorator"):

        class Wrong(View):
            @offload
            def get(self, request):
                return None


def test_method_decorator_on_one_handler_says_to_use_the_mixin(client: Client) -> None:
    assert client.get("/classes/note/").content == b'<p id="where">web</p>'
    with pytest.raises(ImproperlyConfigured, match="offload_methods"):
        client.post("/classes/note/", {"note": "milk"})
    assert not Job.objects.exists()
