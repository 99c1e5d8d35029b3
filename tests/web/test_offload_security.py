"""``@offload`` and secrets: nothing in a record lets its reader act as the visitor.

Each test names a failure mode of the security review (issue 8) and runs through a
real gearmand and a real worker.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth.models import Permission, User
from django.core.files.storage import default_storage
from django.middleware.csrf import _does_token_match  # type: ignore[attr-defined]
from django.test import Client
from django.urls import reverse

from django_gearattach.gearman.connection import admin_command
from django_gearattach.gearman.protocol import parse_status
from django_gearattach.gearman.rendezvous import Address
from django_gearattach.models import Job, Status
from django_gearattach.web.messages import OFFLOAD_FUNCTION
from django_gearattach.web.responses import open_response, stored_response
from django_gearattach.web.tokens import make_token
from tests.conftest import executions
from tests.helpers import wait_for_status, wait_until
from tests.web.test_offload import finish, revisit, started

pytest_plugins = ["tests.webfixtures"]

pytestmark = pytest.mark.usefixtures("cluster")

CHANGELIST = "admin:django_gearattach_job_changelist"


def row_text(job: Job) -> str:
    """Every column of the job's row, as text: what a database reader sees."""
    values = Job.objects.filter(pk=job.pk).values().get()
    return " ".join(str(value) for value in values.values())


def signed_in(username: str, **fields: Any) -> tuple[User, Client]:
    user = User.objects.create_user(username, password="pw", **fields)
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    return user, client


def post_with_csrf(client: Client, path: str, data: dict[str, str]) -> Any:
    secret = "c" * 32
    client.cookies[settings.CSRF_COOKIE_NAME] = secret
    return client.post(path, {**data, "csrfmiddlewaretoken": secret})


def test_no_session_key_or_csrf_secret_in_the_record_or_the_admin(log_path: Path) -> None:
    """A view-only operator read a superuser's session key on the job page (finding 1)."""
    boss, browser = signed_in("boss", is_staff=True, is_superuser=True)
    job, token = started(post_with_csrf(browser, "/offload/sync/", {"colour": "red"}))
    session_key = browser.session.session_key
    csrf_secret = browser.cookies[settings.CSRF_COOKIE_NAME].value
    done = finish(job)
    page = revisit(browser, "/offload/sync/", token).content.decode()
    assert 'id="user">boss<' in page  # the worker still ran it as boss, with the session
    rendered_csrf = page.split('id="csrf">')[1].split("<")[0]
    assert _does_token_match(rendered_csrf, csrf_secret)

    secrets = [session_key, csrf_secret, rendered_csrf]
    assert not [s for s in secrets if s in row_text(done)]
    assert done.belongs_to(boss)

    viewer, operator = signed_in("viewer", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_job"))
    admin_page = operator.get(reverse("admin:django_gearattach_job_change", args=[job.pk]))
    assert admin_page.status_code == 200
    html = admin_page.content.decode()
    assert "(encrypted)" in html
    assert not [s for s in secrets if s in html]


def test_the_session_key_is_kept_as_a_keyed_hash(client: Client) -> None:
    job, _ = started(client.get("/offload/sync/"))
    key = client.session.session_key
    assert job.session_hash
    assert key not in job.session_hash
    assert job.belongs_to(None, key)
    assert not job.belongs_to(None, "another-session")
    assert list(Job.objects.owned_by(None, key)) == [job]
    finish(job)


def test_a_signed_in_visitors_page_is_sealed_in_the_record() -> None:
    _, browser = signed_in("ada")
    job, token = started(browser.get("/offload/sync/", {"colour": "blue"}))
    done = finish(job)
    assert set(done.result) == {"status", "content_type", "sealed"}
    assert "blue" not in str(done.result)
    assert 'id="colour">blue<' in open_response(done.result)["html"]
    assert 'id="colour">blue<' in revisit(browser, "/offload/sync/", token).content.decode()


# -- replaying a request as its user (finding 5) ------------------------------------------


@pytest.fixture
def operator(admin_client: Client) -> Client:
    return admin_client


def retry(operator: Client, job: Job, **extra: str) -> Any:
    data = {"action": "retry_jobs", "_selected_action": [str(job.pk)], **extra}
    return operator.post(reverse(CHANGELIST), data, follow=True)


def test_retrying_an_offloaded_post_asks_first(operator: Client, log_path: Path) -> None:
    _, browser = signed_in("poster")
    job, _ = started(post_with_csrf(browser, "/offload/sync/", {"log": str(log_path)}))
    finish(job)
    asked = retry(operator, job)
    assert asked.status_code == 200
    html = asked.content.decode()
    assert "POST /offload/sync/" in html
    assert "poster" in html
    assert Job.objects.count() == 1  # nothing replayed yet
    confirmed = retry(operator, job, confirm_replay="yes")
    assert "Resubmitted 1 job" in confirmed.content.decode()
    again = Job.objects.exclude(pk=job.pk).get()
    finish(again)
    assert len(executions(log_path)) == 2


@pytest.mark.parametrize("change", ["deactivated", "password changed", "signed out"])
def test_a_retry_is_refused_when_its_user_could_not_make_the_request_now(
    operator: Client, log_path: Path, change: str
) -> None:
    user, browser = signed_in("leaver")
    job, _ = started(browser.get("/offload/sync/", {"log": str(log_path)}))
    finish(job)
    if change == "deactivated":
        user.is_active = False
        user.save()
    elif change == "password changed":
        user.set_password("a new one")
        user.save()
    else:
        browser.logout()
    retry(operator, job)
    again = Job.objects.exclude(pk=job.pk).get()
    failed = wait_for_status(again.function, again.key, Status.FAILED)
    assert failed.error.startswith("OffloadRefused: the user who made this request")
    assert len(executions(log_path)) == 1  # the view never ran again


def test_a_retry_of_a_get_by_an_active_user_runs(operator: Client, log_path: Path) -> None:
    _, browser = signed_in("stayer")
    job, _ = started(browser.get("/offload/sync/", {"log": str(log_path)}))
    finish(job)
    retry(operator, job)
    again = Job.objects.exclude(pk=job.pk).get()
    finish(again)
    assert len(executions(log_path)) == 2


# -- shared views (finding 2) -------------------------------------------------------------


def test_a_shared_view_runs_as_an_anonymous_visitor_without_a_session(log_path: Path) -> None:
    _, first = signed_in("first")
    session = first.session
    session["favourite"] = "liquorice"
    session.save()
    secret = "d" * 32
    first.cookies[settings.CSRF_COOKIE_NAME] = secret
    job, _ = started(first.get("/offload/shared/", {"year": "2031", "log": str(log_path)}))
    finish(job)
    _, second = signed_in("second")
    html = second.get("/offload/shared/", {"year": "2031"}).content.decode()
    assert "Shared report 2031" in html
    assert 'id="user">anonymous<' in html  # not "first"
    assert 'id="session"><' in html  # not first's session data
    rendered = html.split('id="csrf">')[1].split("<")[0]
    assert not _does_token_match(rendered, secret)
    record = Job.objects.get(pk=job.pk)
    assert record.arguments["kwargs"]["request"]["sealed"] is None
    assert record.result.get("html")  # nothing personal in it: not sealed


def test_an_error_response_is_never_the_shared_outcome(log_path: Path) -> None:
    _, staff = signed_in("staffer", is_staff=True)
    job, _ = started(staff.get("/offload/staff-inside/", {"log": str(log_path)}))
    failed = finish(job, Status.FAILED)
    assert "the shared view answered 403" in failed.error
    # The next requester, whoever it is, runs it again instead of getting a stored 403.
    _, other = signed_in("other")
    again, _ = started(other.get("/offload/staff-inside/", {"log": str(log_path)}))
    assert again.pk == job.pk
    finish(again, Status.FAILED)
    assert len(executions(log_path)) == 2
    # ...and the record now belongs to who asked last (finding 7).
    assert Job.objects.get(pk=job.pk).owner.username == "other"


def test_access_checks_above_offload_run_for_every_requester(log_path: Path) -> None:
    _, staff = signed_in("chief", is_staff=True)
    job, _ = started(staff.get("/offload/staff-outside/", {"log": str(log_path)}))
    finish(job)
    _, visitor = signed_in("visitor")
    refused = visitor.get("/offload/staff-outside/")
    assert refused.status_code == 302
    assert "/login" in refused["Location"]
    _, colleague = signed_in("colleague", is_staff=True)
    page = colleague.get("/offload/staff-outside/")
    assert page.status_code == 200
    assert b"Staff figures" in page.content
    assert len(executions(log_path)) == 1


# -- the admin's live widget (finding 8) --------------------------------------------------


def test_the_admins_live_widget_never_receives_the_users_page(admin_client: Client) -> None:
    job = Job.objects.create(function=OFFLOAD_FUNCTION, key="watched", status=Status.RUNNING)
    page = admin_client.get(reverse("admin:django_gearattach_job_change", args=[job.pk]))
    token = page.context["gearattach_live_token"]
    result = stored_response(200, "text/html", {"html": "<p>the user's page</p>"}, private=True)
    Job.objects.filter(pk=job.pk).update(status=Status.COMPLETE, result=result)
    expected = {
        "type": "complete",
        "result": {"status": 200, "content_type": "text/html"},
        "html": None,
    }
    assert admin_client.get(f"/gearattach/jobs/{token}/").json()["outcome"] == expected
    poll = admin_client.get(f"/gearattach/jobs/{token}/poll/", {"timeout": "0"}).json()
    assert poll["messages"] == [expected]
    # The user's own token gets the page.
    mine = make_token(OFFLOAD_FUNCTION, "watched", None)
    assert admin_client.get(f"/gearattach/jobs/{mine}/").json()["outcome"]["html"]


def test_a_full_queue_answers_503_instead_of_queueing_more(client: Client, settings) -> None:
    """Back-pressure against floods, e.g. cookieless GETs that each start a job."""
    settings.GEARATTACH = {**settings.GEARATTACH, "OFFLOAD_QUEUE_LIMIT": 2}
    for key in ("a", "b"):
        Job.objects.create(function=OFFLOAD_FUNCTION, key=key, status=Status.QUEUED)
    busy = Client().get("/offload/sync/")
    assert busy.status_code == 503
    assert busy["Retry-After"] == "30"
    assert Job.objects.count() == 2
    # Once the queue drains, new jobs start again.
    Job.objects.filter(key="a").update(status=Status.COMPLETE)
    job, _ = started(client.get("/offload/sync/"))
    finish(job)


# -- someone with network access to gearmand --------------------------------------------


def gearman_cli_submit(cluster: Any, key: str, kwargs: dict[str, Any]) -> None:
    port = cluster.address.rsplit(":", 1)[1]
    payload = json.dumps({"kwargs": kwargs})
    sent = subprocess.run(
        ["gearman", "-p", port, "-f", OFFLOAD_FUNCTION, "-u", key, "-b", payload],
        capture_output=True,
        timeout=30,
    )
    assert sent.returncode == 0, sent.stderr


@pytest.mark.parametrize("change", ["forged signature", "another user", "another key"])
def test_a_request_forged_or_replayed_through_gearmand_never_runs(
    cluster: Any, operator: Client, log_path: Path, change: str
) -> None:
    """Someone on gearmand's network copies mallory's signed request and submits it."""
    boss = User.objects.create_superuser("boss", password="pw")
    _, browser = signed_in("mallory")
    job, _ = started(browser.get("/offload/sync/", {"log": str(log_path)}))
    finish(job)
    kwargs = dict(job.arguments["kwargs"])
    if change == "forged signature":
        kwargs["signature"] = "x" * 27
    elif change == "another user":
        kwargs["request"] = {**kwargs["request"], "user_id": boss.pk}
    key = "copied-" + change.replace(" ", "-")
    gearman_cli_submit(cluster, key, kwargs)
    failed = wait_for_status(OFFLOAD_FUNCTION, key, Status.FAILED)
    assert "not signed with this site's SECRET_KEY" in failed.error
    # The admin's Retry does not launder it into a signed request either.
    response = retry(operator, failed)
    assert "was not signed by this site and was not retried" in response.content.decode()
    assert len(executions(log_path)) == 1  # only mallory's own run


def test_a_request_replayed_under_its_own_key_gets_the_stored_outcome(
    cluster: Any, log_path: Path
) -> None:
    _, browser = signed_in("mallory")
    job, _ = started(browser.get("/offload/sync/", {"log": str(log_path)}))
    done = finish(job)
    gearman_cli_submit(cluster, job.key, job.arguments["kwargs"])
    address = Address.parse(cluster.address)

    def waiting() -> int:
        lines = admin_command(address, "status")
        return sum(s.queued for s in parse_status(lines) if s.function == OFFLOAD_FUNCTION)

    wait_until(lambda: waiting() == 0, what="gearmand to hand the copy to a worker")
    assert Job.objects.get(pk=job.pk).finished_at == done.finished_at
    assert len(executions(log_path)) == 1


def test_a_forged_record_cannot_have_someone_elses_files_deleted(
    cluster: Any, operator: Client
) -> None:
    """Review 3, finding 2 (stored files): a record's arguments come from whoever
    submitted the job to gearmand; only a request this site signed names files of its own.

    A download's path crosses gearmand in clear (in WORK_COMPLETE), so a peer there
    can name it in a forged request; deleting the failed forged job deleted the file.
    """
    _, browser = signed_in("owner")
    job, token = started(browser.get("/offload/csv/"))
    done = finish(job)
    path = done.result["download"]["path"]
    assert default_storage.exists(path)
    request = dict(done.arguments["kwargs"]["request"])
    request["files"] = {
        "document": [
            {"path": path, "name": "a.csv", "content_type": "text/csv", "charset": None, "size": 1}
        ]
    }
    view = done.arguments["kwargs"]["view"]
    gearman_cli_submit(
        cluster, "forged-files", {"view": view, "request": request, "signature": "x" * 27}
    )
    forged = wait_for_status(OFFLOAD_FUNCTION, "forged-files", Status.FAILED)
    # The operator clears the failed job, as its admin page invites them to.
    data = {"action": "delete_finished", "_selected_action": [str(forged.pk)]}
    operator.post(reverse(CHANGELIST), data, follow=True)
    assert not Job.objects.filter(pk=forged.pk).exists()
    assert default_storage.exists(path)
    download = browser.get(f"/gearattach/jobs/{token}/download/")
    assert download.status_code == 200
    body = b"".join(download.streaming_content)  # type: ignore[attr-defined]
    assert body == b"year,total\n2024,42\n"
    # The owner's own record still takes its file with it.
    operator.post(
        reverse(CHANGELIST), {"action": "delete_finished", "_selected_action": [str(job.pk)]}
    )
    assert not default_storage.exists(path)
