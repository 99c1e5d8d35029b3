"""The response as the view made it (headers, cookies, redirects) and sensitive fields, through
a real gearmand and a real worker."""

from __future__ import annotations

import json

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse

from django_gearattach.capture import signed_again
from django_gearattach.exceptions import BadPayload
from django_gearattach.models import Job
from django_gearattach.responses import open_response

from .test_offload import finish, revisit, started

pytest_plugins = ["tests.webfixtures"]

pytestmark = pytest.mark.usefixtures("cluster")

FORM = {"name": "ada", "password": "hunter2-pw", "pin": "4711-pin", "language": "fr"}


def text_of(job: Job) -> str:
    return json.dumps([job.arguments, job.result, job.error])


def test_a_redirect_after_post_carries_the_views_headers_and_signed_cookies(
    client: Client,
) -> None:
    job, token = started(client.post("/preferences/", FORM))
    # The password input and the field marked sensitive_post_parameters are sealed.
    request = job.arguments["kwargs"]["request"]
    assert [name for name, _ in request["post"]] == ["name", "language"]
    assert request["sensitive"]
    assert "hunter2" not in text_of(job)
    assert "4711" not in text_of(job)
    done = finish(job)
    # Once the view has run, the sealed fields are gone from the record.
    request = done.arguments["kwargs"]["request"]
    assert request["sensitive"] is None
    assert request["sensitive_removed"] is True
    # The response is stored sealed: its Location, headers and cookies too.
    assert set(done.result) == {"status", "sealed"}
    assert "language" not in str(done.result)
    assert "/preferences/" not in str(done.result)
    stored = open_response(done.result)
    assert {c["name"] for c in stored["cookies"]} == {"language", "theme"}

    page = revisit(client, "/preferences/", token)
    assert page.status_code == 303
    assert page["Location"] == "/preferences/saved/"
    assert page["X-Password-Length"] == "10"  # the worker had the password
    assert page["X-Pin"] == "4711-pin"
    assert "no-store" in page["Cache-Control"]
    theme = page.cookies["theme"]
    assert (theme.value, theme["max-age"], theme["samesite"]) == ("dark", 3600, "Strict")
    assert page.cookies["language"]["httponly"]
    # The cookie is signed the way the view signed it: the next view reads it.
    saved = client.get("/preferences/saved/")
    assert '<p id="language">fr</p>' in saved.content.decode()
    # A browser following the job never gets the cookies or headers in a message.
    state = client.get(f"/gearattach/jobs/{token}/").json()
    assert "cookies" not in json.dumps(state)
    assert "X-Pin" not in json.dumps(state)


def test_sensitive_post_parameters_below_offload_in_method_decorators_is_honoured(
    client: Client,
) -> None:
    """Django builds that wrapper only when dispatch runs, in the worker: offload reads
    the parameters from the decorator method_decorator keeps."""
    job, token = started(client.post("/preferences/below/", FORM))
    request = job.arguments["kwargs"]["request"]
    assert [name for name, _ in request["post"]] == ["name", "language"]
    assert "4711" not in text_of(job)
    done = finish(job)
    assert done.arguments["kwargs"]["request"]["sensitive_removed"] is True
    page = revisit(client, "/preferences/below/", token)
    assert page.status_code == 303
    assert page["X-Pin"] == "4711-pin"  # the worker had it


def test_sensitive_fields_are_never_in_the_admin_and_a_retry_says_why_not(
    admin_client: Client,
) -> None:
    gate = Client()
    job, _ = started(gate.post("/payment/", {"card": "4242424242424242", "amount": "3"}))
    page = admin_client.get(reverse("admin:django_gearattach_job_change", args=[job.pk]))
    html = page.content.decode()
    # "(encrypted)" while queued, or already "(removed ...)" if the worker was quick.
    assert "&quot;sensitive&quot;: &quot;(" in html
    assert "4242424242424242" not in html
    assert job.arguments["kwargs"]["request"]["sensitive"] not in html  # nor its ciphertext
    done = finish(job)
    after = admin_client.get(reverse("admin:django_gearattach_job_change", args=[job.pk]))
    assert "(removed once the view had run)" in after.content.decode()
    assert open_response(done.result)["body"] == '{"card_digits": 16, "body": ""}'
    with pytest.raises(BadPayload, match="sensitive fields were removed"):
        signed_again(done.arguments["kwargs"], done.key, "another-key")
    retried = admin_client.post(
        reverse("admin:django_gearattach_job_changelist"),
        {"action": "retry_jobs", "_selected_action": [str(job.pk)], "confirm_replay": "yes"},
        follow=True,
    )
    assert "had its sensitive fields removed once it ran" in retried.content.decode()
    assert Job.objects.count() == 1  # nothing resubmitted


def test_a_cancelled_request_loses_its_sensitive_fields(settings) -> None:
    from django_gearattach.operations import cancel

    settings.GEARATTACH = {**settings.GEARATTACH, "SERVERS": ["127.0.0.1:9"]}  # unreachable
    Client().post("/payment/", {"card": "4242424242424242"})
    job = Job.objects.get()  # submitting failed: it will never run, so nothing is kept
    assert job.arguments["kwargs"]["request"]["sensitive_removed"] is True
    job.status = "queued"
    job.save(update_fields=["status"])
    job.arguments["kwargs"]["request"]["sensitive"] = "sealed-value"
    job.arguments["kwargs"]["request"]["sensitive_removed"] = False
    Job.objects.filter(pk=job.pk).update(arguments=job.arguments)
    cancel(job)
    job.refresh_from_db()
    assert job.arguments["kwargs"]["request"]["sensitive"] is None


def test_a_json_body_is_sealed_whole_when_the_view_names_sensitive_fields() -> None:
    client = Client()
    payload = '{"card": "5555444433331111"}'
    job, _ = started(client.post("/payment/", payload, content_type="application/json"))
    assert job.arguments["kwargs"]["request"]["body"] is None
    assert "5555" not in text_of(job)
    done = finish(job)
    assert json.loads(open_response(done.result)["body"])["body"] == payload


def test_a_view_without_sensitive_fields_stores_its_post_as_before(client: Client) -> None:
    job, _ = started(client.post("/offload/sync/", {"colour": "red"}))
    assert job.arguments["kwargs"]["request"]["post"] == [["colour", "red"]]
    assert job.arguments["kwargs"]["request"]["sensitive"] is None
    finish(job)


def test_a_csrf_cookie_the_view_needed_reaches_the_browser() -> None:
    """A first visit without a CSRF cookie: the token the worker rendered gets its cookie."""
    client = Client(enforce_csrf_checks=True)
    job, token = started(client.get("/offload/sync/"))
    finish(job)
    page = revisit(client, "/offload/sync/", token)
    rendered = page.content.decode().split('id="csrf">')[1].split("<")[0]
    assert rendered
    cookie = page.cookies["csrftoken"].value
    from django.middleware.csrf import _does_token_match  # type: ignore[attr-defined]

    assert _does_token_match(rendered, cookie)


def test_a_signed_in_users_response_headers_stay_theirs() -> None:
    user = User.objects.create_user("ada", password="pw")
    client = Client()
    client.force_login(user)
    job, token = started(client.post("/preferences/", FORM))
    finish(job)
    assert Client().get("/preferences/", {"gearattach": token}).status_code == 403
    assert revisit(client, "/preferences/", token).status_code == 303
