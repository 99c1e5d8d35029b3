"""``@offload`` end to end: a real gearmand and real workers run the views' bodies."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.contrib.auth.models import User
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import SimpleUploadedFile
from django.middleware.csrf import _does_token_match  # type: ignore[attr-defined]
from django.test import AsyncClient, Client

from django_gearattach.models import Job, Status
from django_gearattach.web.messages import OFFLOAD_FUNCTION
from django_gearattach.web.processing import TOKEN_PARAM
from django_gearattach.web.responses import open_response
from django_gearattach.web.tokens import Identity, make_token
from tests.conftest import executions
from tests.helpers import wait_for_status, wait_until

pytest_plugins = ["tests.webfixtures"]

pytestmark = pytest.mark.usefixtures("cluster")


def started(response: Any) -> tuple[Job, str]:
    """The job and token of a processing page."""
    assert response.status_code == 202, response.content[:500]
    assert b"data-gearattach" in response.content
    return response.context["job"], response.context["token"]


def finish(job: Job, status: str = Status.COMPLETE) -> Job:
    return wait_for_status(job.function, job.key, status)


def revisit(client: Client, path: str, token: str) -> Any:
    return client.get(path, {TOKEN_PARAM: token})


def test_sync_view_get_anonymous(client: Client, log_path: Path) -> None:
    response = client.get("/offload/sync/", {"colour": "red", "log": str(log_path)})
    job, token = started(response)
    assert job.function == OFFLOAD_FUNCTION
    assert job.owner_id is None
    assert job.belongs_to(None, client.session.session_key)
    assert client.session.session_key not in str(job.arguments)
    finish(job)
    page = revisit(client, "/offload/sync/", token)
    assert page.status_code == 200
    html = page.content.decode()
    assert 'id="method">GET<' in html
    assert 'id="colour">red<' in html
    assert 'id="user">anonymous<' in html
    (execution,) = executions(log_path)
    assert f'id="execution">{execution}<' in html
    # What the view put in the session in the worker is there for the next request.
    assert client.session["visited_worker"] is True
    # A reload shows the stored outcome; nothing runs again.
    assert revisit(client, "/offload/sync/", token).content.decode() == html
    assert executions(log_path) == [execution]


def test_sync_view_post_logged_in_with_csrf(log_path: Path) -> None:
    user = User.objects.create_user("ada", password="pw")
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    # Without a CSRF token the view is refused as it would be without @offload.
    refused = client.post("/offload/sync/", {"colour": "blue", "log": str(log_path)})
    assert refused.status_code == 403
    assert not Job.objects.exists()
    secret = "a" * 32
    client.cookies["csrftoken"] = secret
    response = client.post(
        "/offload/sync/",
        {"colour": "blue", "log": str(log_path), "csrfmiddlewaretoken": secret},
    )
    job, token = started(response)
    assert job.owner_id == user.pk
    finish(job)
    html = revisit(client, "/offload/sync/", token).content.decode()
    assert 'id="method">POST<' in html
    assert 'id="colour">blue<' in html
    assert 'id="user">ada<' in html
    # The view rendered a CSRF token that matches the visitor's cookie.
    rendered = html.split('id="csrf">')[1].split("<")[0]
    assert _does_token_match(rendered, secret)
    assert len(executions(log_path)) == 1


async def test_async_view_logged_in(async_client: AsyncClient, log_path: Path) -> None:
    user = await User.objects.acreate_user("grace", password="pw")
    await async_client.aforce_login(user)
    response = await async_client.get("/offload/async/", {"colour": "green", "log": str(log_path)})
    assert response.status_code == 202
    job = response.context["job"]
    assert job.priority == "high"
    from asgiref.sync import sync_to_async

    done = await sync_to_async(finish)(job)
    assert done.progress_numerator == 2
    assert done.progress_denominator == 2
    page = await async_client.get("/offload/async/", {TOKEN_PARAM: response.context["token"]})
    html = page.content.decode()
    assert 'id="user">grace<' in html
    assert 'id="colour">green<' in html
    assert 'id="method">GET<' in html


def test_async_view_post_anonymous(client: Client, log_path: Path) -> None:
    response = client.post("/offload/async/", {"colour": "teal", "log": str(log_path)})
    job, token = started(response)
    finish(job)
    html = revisit(client, "/offload/async/", token).content.decode()
    assert 'id="method">POST<' in html
    assert 'id="colour">teal<' in html
    assert 'id="user">anonymous<' in html


def test_url_arguments_keep_their_converter_types(client: Client) -> None:
    job, token = started(client.get("/offload/item/7/"))
    finish(job)
    assert '<p id="item">7 int</p>' in revisit(client, "/offload/item/7/", token).content.decode()


def test_redirect_is_followed(client: Client) -> None:
    job, token = started(client.get("/offload/redirect/"))
    done = finish(job)
    # The Location is sealed in the record: a user's redirect may carry their data.
    assert set(done.result) == {"status", "sealed"}
    assert "/somewhere/else/" not in str(done.result)
    assert open_response(done.result) == {"status": 302, "redirect": "/somewhere/else/"}
    page = revisit(client, "/offload/redirect/", token)
    assert page.status_code == 302
    assert page["Location"] == "/somewhere/else/"


def test_non_html_response_becomes_a_download(client: Client) -> None:
    job, token = started(client.get("/offload/csv/"))
    done = finish(job)
    assert done.result["download"]["name"] == "totals.csv"
    # The page's own URL serves the file as the view made it: named, as an attachment.
    page = revisit(client, "/offload/csv/", token)
    assert page.status_code == 200
    assert page["Content-Disposition"] == 'attachment; filename="totals.csv"'
    assert b"".join(page.streaming_content) == b"year,total\n2024,42\n"
    # The widget's link, for the processing page that stays on screen.
    download = client.get(f"/gearattach/jobs/{token}/download/")
    assert download.status_code == 200
    assert b"".join(download.streaming_content) == b"year,total\n2024,42\n"  # type: ignore[attr-defined]
    assert 'filename="totals.csv"' in download["Content-Disposition"]
    assert {"private", "no-store"} <= {p.strip() for p in download["Cache-Control"].split(",")}
    # The admin's summary token follows the job but never gets the user's file.
    summary = make_token(
        job.function, job.key, Identity.of_request(page.wsgi_request), summary=True
    )
    assert client.get(f"/gearattach/jobs/{summary}/download/").status_code == 404


def test_upload_is_handed_to_the_worker_and_removed(client: Client) -> None:
    content = b"quarterly figures\n" * 100
    upload = SimpleUploadedFile("figures.txt", content, content_type="text/plain")
    job, token = started(client.post("/offload/upload/", {"document": upload, "colour": "red"}))
    stored = job.arguments["kwargs"]["request"]["files"]["document"][0]["path"]
    finish(job)
    html = revisit(client, "/offload/upload/", token).content.decode()
    assert hashlib.sha256(content).hexdigest() in html
    assert '<p id="name">figures.txt</p>' in html
    assert '<p id="colour">red</p>' in html
    assert not default_storage.exists(stored)


def test_uploads_refused_when_not_accepted(client: Client) -> None:
    upload = SimpleUploadedFile("x.txt", b"x")
    response = client.post("/offload/no-files/", {"document": upload})
    assert response.status_code == 400
    assert b"does not accept file uploads" in response.content
    assert not Job.objects.exists()


def test_key_attaches_to_one_job_and_reuses_its_outcome(
    client: Client, log_path: Path, gate: Path
) -> None:
    params = {"year": "2024", "log": str(log_path), "gate": str(gate)}
    first, _token = started(client.get("/offload/keyed/", params))
    wait_until(lambda: executions(log_path), what="the job to start")
    second, _ = started(client.get("/offload/keyed/", params))  # a second tab
    assert second.pk == first.pk
    gate.touch()
    finish(first)
    again = client.get("/offload/keyed/", params)  # after completion: the stored page
    assert again.status_code == 200
    assert b"Report 2024" in again.content
    assert len(executions(log_path)) == 1
    # Another visitor with the same parameters gets a job of their own (not shared).
    other = Client()
    theirs, _ = started(other.get("/offload/keyed/", params))
    assert theirs.key != first.key
    finish(theirs)
    assert len(executions(log_path)) == 2


def test_shared_key_is_one_job_for_everyone(client: Client, log_path: Path) -> None:
    params = {"year": "1999", "log": str(log_path)}
    job, token = started(client.get("/offload/shared/", params))
    finish(job)
    other = Client()
    page = other.get("/offload/shared/", params)
    assert page.status_code == 200
    assert b"Shared report 1999" in page.content
    # The shared token works for anyone.
    assert revisit(other, "/offload/shared/", token).status_code == 200
    assert len(executions(log_path)) == 1


def test_a_request_a_shared_view_gives_no_key_is_the_visitors_own_job(client: Client) -> None:
    """A key function returns None for a request that names nothing to share (a form
    with errors): that job is nobody else's, so it runs as the visitor's own and its
    400 answers them, instead of being refused as a shared outcome (issue 21)."""
    job, token = started(client.get("/offload/shared/"))
    done = finish(job)
    assert done.result["status"] == 400
    page = revisit(client, "/offload/shared/", token)
    assert page.status_code == 400
    assert b"Which year?" in page.content
    # Bound to the visitor, as any job of their own: not a token for everyone.
    assert revisit(Client(), "/offload/shared/", token).status_code == 403
    assert job.arguments["kwargs"]["request"]["shared"] is False


def test_authentication_runs_before_offloading(client: Client) -> None:
    response = client.get("/offload/private/")
    assert response.status_code == 302
    assert "/login" in response["Location"]
    assert not Job.objects.exists()


def test_failing_view_shows_its_error_with_debug_only(client: Client, settings) -> None:
    job, token = started(client.get("/offload/broken/"))
    done = finish(job, Status.FAILED)
    assert "ValueError: the report exploded" in done.error
    page = revisit(client, "/offload/broken/", token)
    assert page.status_code == 500
    assert b"the report exploded" not in page.content
    assert b"the job failed" in page.content
    assert b"Traceback" not in page.content
    settings.DEBUG = True
    debug_page = revisit(client, "/offload/broken/", token).content
    assert b"the report exploded" in debug_page
    # The owner sees where it happened, as on Django's own debug page.
    assert b'class="gearattach-traceback"' in debug_page
    assert b"Traceback (most recent call last)" in debug_page


def test_with_gearmand_down_visitors_do_not_see_its_address(client: Client, settings) -> None:
    settings.GEARATTACH = {**settings.GEARATTACH, "SERVERS": ["127.0.0.1:9"]}
    response = client.get("/offload/sync/")
    assert response.status_code == 503
    job = Job.objects.get()
    assert "127.0.0.1:9" in job.error  # the operator's record says where
    assert b"127.0.0.1:9" not in response.content
    assert b"the job failed" in response.content


def test_http404_in_the_view_is_its_response(client: Client) -> None:
    job, token = started(client.get("/offload/missing/"))
    done = finish(job)
    assert done.result["status"] == 404
    assert revisit(client, "/offload/missing/", token).status_code == 404


def test_explicit_processing_response(client: Client, gate: Path) -> None:
    gate.touch()
    response = client.get("/explicit/", {"gate": str(gate)})
    job, token = started(response)
    assert job.function == "tests.chatty"
    done = finish(job)
    assert done.result == {"answer": 42}
    state = client.get(f"/gearattach/jobs/{token}/").json()
    assert state["status"] == "complete"
    assert state["outcome"] == {"type": "complete", "result": {"answer": 42}, "html": None}


def test_someone_elses_token_is_refused(client: Client) -> None:
    job, token = started(client.get("/offload/sync/"))
    stranger = Client()
    assert revisit(stranger, "/offload/sync/", token).status_code == 403
    assert revisit(client, "/offload/sync/", token + "x").status_code == 403
    # A valid token for another page's job is not this page's.
    assert revisit(client, "/offload/item/1/", token).status_code == 404
    finish(job)


def test_an_upload_over_the_limit_is_refused_with_413_and_nothing_kept(
    client: Client, settings
) -> None:
    settings.GEARATTACH = {**settings.GEARATTACH, "OFFLOAD_MAX_UPLOAD_SIZE": 2000}
    before = _stored_uploads()
    big = SimpleUploadedFile("big.bin", b"x" * 3000)
    response = client.post("/offload/upload/", {"document": big})
    assert response.status_code == 413
    assert "at most 2.0" in response.content.decode()  # "2.0 KB"
    assert not Job.objects.exists()
    assert _stored_uploads() == before  # nothing waits in storage
    # Within the limit it is accepted as before.
    small = SimpleUploadedFile("small.txt", b"x" * 100)
    job, _ = started(client.post("/offload/upload/", {"document": small}))
    finish(job)


def test_the_default_upload_limit_is_ten_mebibytes() -> None:
    from django_gearattach.conf import conf

    assert conf.OFFLOAD_MAX_UPLOAD_SIZE == 10 * 1024 * 1024


def _stored_uploads() -> list[str]:
    from django_gearattach.web.capture import UPLOAD_DIR

    root = Path(django_settings.MEDIA_ROOT) / UPLOAD_DIR
    return sorted(str(p) for p in root.rglob("*")) if root.exists() else []
