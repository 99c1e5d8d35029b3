"""API clients get the asynchronous request-reply pattern: 202 + Location + Retry-After, a
status URL, 303 to the result, the view's own response; ``Prefer: wait=N`` (RFC 7240).

Real gearmand and worker throughout; the last tests speak plain HTTP to a real uvicorn.
"""

from __future__ import annotations

import http.client
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from unittest import mock
from urllib.parse import urlsplit

import pytest
from django.db import connection
from django.test import Client, RequestFactory

from django_gearattach.models import Job, Status
from django_gearattach.testing import Gearmand, free_port, wait_for_port
from django_gearattach.web import waiting
from django_gearattach.web.api import RESULT_PARAM, RETRY_AFTER, prefer_wait, wants_html
from tests.web.test_offload import finish

pytest_plugins = ["tests.webfixtures"]

ROOT = Path(__file__).resolve().parents[2]
JSON = {"Accept": "application/json"}


@pytest.mark.parametrize(
    ("accept", "html"),
    [
        (None, True),  # no Accept: the page it always got
        ("text/html,application/xhtml+xml,*/*;q=0.8", True),  # a browser
        ("*/*", False),  # curl, fetch()
        ("application/json", False),
        ("text/html;q=0, application/json", False),
    ],
)
def test_who_gets_a_page(accept: str | None, html: bool) -> None:
    headers = {"Accept": accept} if accept is not None else {}
    assert wants_html(RequestFactory().get("/", headers=headers)) is html


def test_prefer_wait_is_read_as_rfc_7240_says(settings) -> None:
    def wait(value: str) -> float | None:
        return prefer_wait(RequestFactory().get("/", headers={"Prefer": value}))

    assert wait("wait=5") == 5
    assert wait("respond-async, wait=2.5") == 2.5
    assert wait('wait="3"') == 3
    assert wait("handling=lenient") is None
    assert wait("wait=soon") is None  # not understood: ignored
    assert wait("wait=-1") is None
    assert wait("wait=3600") == settings.GEARATTACH.get("LONGPOLL_MAX_TIMEOUT", 60.0)


@pytest.fixture
def wsgi_waits(settings) -> None:
    """A site that lets requests wait under WSGI (the test client is a WSGI handler)."""
    settings.GEARATTACH = {**settings.GEARATTACH, "WSGI_MAX_WAIT": 20}


@pytest.mark.usefixtures("cluster", "wsgi_waits")
def test_accepted_then_status_then_see_other_then_the_views_response(
    client: Client, gate: Path
) -> None:
    accepted = client.get("/offload/sync/", {"colour": "red", "gate": str(gate)}, headers=JSON)
    assert accepted.status_code == 202
    assert accepted["Retry-After"] == str(RETRY_AFTER)
    assert "Accept" in accepted["Vary"]
    status_url = accepted["Location"]
    assert status_url.startswith("http://testserver/offload/sync/?")
    assert "colour=red" in status_url
    body = accepted.json()
    assert body["status"] == "queued"
    assert body["status_url"] == status_url
    running = client.get(status_url, headers=JSON)
    assert running.status_code == 200
    assert running["Retry-After"] == str(RETRY_AFTER)
    assert running.json()["status"] in ("queued", "running")
    assert "result_url" not in running.json()
    # Another client holds no right to the job's links.
    assert Client().get(status_url, headers=JSON).status_code == 403
    gate.touch()
    done = client.get(status_url, headers={**JSON, "Prefer": "wait=20"})  # the push path
    assert done.status_code == 303
    result_url = done["Location"]
    assert f"{RESULT_PARAM}=" in result_url
    result = client.get(result_url, headers=JSON)
    # The view's own response: its HTML, as the view made it.
    assert result.status_code == 200
    assert result["Content-Type"] == "text/html; charset=utf-8"
    assert 'id="colour">red<' in result.content.decode()
    assert Client().get(result_url, headers=JSON).status_code == 403


@pytest.mark.usefixtures("cluster", "wsgi_waits")
def test_prefer_wait_answers_with_the_result_when_it_is_ready_in_time(client: Client) -> None:
    response = client.get("/offload/item/3/", headers={**JSON, "Prefer": "wait=20"})
    assert response.status_code == 200
    assert response.content == b'<p id="item">3 int</p>'
    assert Job.objects.get().status == Status.COMPLETE


@pytest.mark.usefixtures("cluster")
def test_under_wsgi_a_request_does_not_wait_unless_the_site_allows_it(
    client: Client, gate: Path, settings, tmp_path: Path
) -> None:
    """Review 3, finding 3: under WSGI a waiting request held a whole worker (an
    unrelated page took 19.1 s). By default ``Prefer: wait`` is not honoured there."""
    soon = tmp_path / "soon"
    threading.Timer(1.0, soon.touch).start()  # the job could finish within the wait
    at_once = client.get(
        "/offload/sync/", {"gate": str(soon)}, headers={**JSON, "Prefer": "wait=20"}
    )
    assert at_once.status_code == 202  # answered at once: it did not wait for the job
    finish(Job.objects.get())
    # Allowed, the wait is bounded by WSGI_MAX_WAIT and holds no database connection.
    slow = client.get("/offload/sync/", {"gate": str(gate), "colour": "x"}, headers=JSON)
    status_url = slow["Location"]
    settings.GEARATTACH = {**settings.GEARATTACH, "WSGI_MAX_WAIT": 0.5}
    held: list[bool] = []
    original = waiting._attach_blocking

    def spy(job: Job, seconds: float) -> None:
        held.append(connection.connection is not None)
        assert seconds == 0.5
        original(job, seconds)

    with mock.patch.object(waiting, "_attach_blocking", spy):
        bounded = client.get(status_url, headers={**JSON, "Prefer": "wait=20"})
    assert bounded.status_code == 200
    assert held == [False]
    # Nor does a thread wait beyond WAIT_THREADS_PER_PROCESS (0: none at all).
    settings.GEARATTACH = {**settings.GEARATTACH, "WAIT_THREADS_PER_PROCESS": 0}
    with mock.patch.object(waiting, "_attach_blocking", spy):
        assert client.get(status_url, headers={**JSON, "Prefer": "wait=20"}).status_code == 200
    assert held == [False]
    gate.touch()


@pytest.mark.usefixtures("cluster")
def test_a_failed_job_says_so_at_its_status_url(client: Client) -> None:
    accepted = client.get("/offload/broken/", headers=JSON)
    assert accepted.status_code == 202
    finish(Job.objects.get(), Status.FAILED)
    state = client.get(accepted["Location"], headers=JSON)
    assert state.status_code == 200
    assert state.json()["status"] == "failed"
    assert state.json()["error"] == "the job failed"  # never the exception's text
    # Its result URL has nothing to show: back to the status URL.
    result_url = accepted["Location"].replace("gearattach=", f"{RESULT_PARAM}=")
    assert client.get(result_url, headers=JSON).status_code == 303


# -- plain HTTP against a real ASGI server --------------------------------------------------
@pytest.fixture(scope="module")
def live(
    web_gearmand: Gearmand, web_worker: object, django_db_setup: None, django_db_blocker: object
) -> Iterator[int]:
    """uvicorn serving tests.asgi on the test database, with the module's gearmand."""
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "GEARATTACH_TEST_DATABASE": str(connection.settings_dict["NAME"]),
        "GEARATTACH_SERVERS": web_gearmand.address,
    }
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "tests.asgi:application", "--port", str(port)],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, timeout=30, process=process)
        yield port
    finally:
        process.terminate()
        process.wait(15)


def request(
    port: int, method: str, url: str, body: str = "", headers: dict[str, str] | None = None
) -> tuple[int, http.client.HTTPMessage, bytes]:
    parts = urlsplit(url)
    target = f"{parts.path}?{parts.query}" if parts.query else parts.path
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request(method, target, body=body.encode(), headers=headers or {})
        response = conn.getresponse()
        return response.status, response.headers, response.read()
    finally:
        conn.close()


FORM = {"Accept": "*/*", "Content-Type": "application/x-www-form-urlencoded"}


@pytest.mark.usefixtures("cluster")
def test_a_plain_http_client_follows_the_job(live: int) -> None:
    status, headers, body = request(live, "POST", "/payment/", "card=4111111111111111", FORM)
    assert status == 202, body
    assert headers["Retry-After"] == str(RETRY_AFTER)
    location = headers["Location"]
    assert location.startswith(f"http://127.0.0.1:{live}/payment/?gearattach=")
    cookie = {"Cookie": headers["Set-Cookie"].split(";")[0]}  # the anonymous client's session
    deadline = time.monotonic() + 30
    while True:
        status, headers, body = request(live, "GET", location, headers={**JSON, **cookie})
        if status != 200 or time.monotonic() > deadline:
            break
        time.sleep(float(headers["Retry-After"]) / 10)
    assert status == 303, body
    status, headers, body = request(live, "GET", headers["Location"], headers={**JSON, **cookie})
    assert status == 200
    assert headers["Content-Type"] == "application/json"
    assert body == b'{"card_digits": 16, "body": ""}'
    # Without the session cookie the same link is refused.
    assert request(live, "GET", location, headers=JSON)[0] == 403


@pytest.mark.usefixtures("cluster")
def test_prefer_wait_over_plain_http_waits_on_the_hub(live: int) -> None:
    status, headers, body = request(
        live, "POST", "/payment/", "card=4111", {**FORM, "Prefer": "wait=20"}
    )
    assert status == 200, body
    assert body == b'{"card_digits": 4, "body": ""}'
    assert "Prefer" in headers["Vary"]
    status, headers, _ = request(live, "POST", "/payment/", "card=1", {**FORM, "Prefer": "wait=0"})
    assert status == 202


@pytest.mark.usefixtures("cluster", "wsgi_waits")
def test_beyond_the_stream_limits_a_request_does_not_wait(
    client: Client, settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    from django_gearattach.web import streams

    # A count of this test's own: an earlier test's stream may still be closing.
    monkeypatch.setattr(streams, "registry", streams.Registry())
    settings.GEARATTACH = {**settings.GEARATTACH, "STREAM_LIMIT_PER_PROCESS": 1}
    with streams.registry.open("someone-else"):
        refused = client.get("/offload/item/5/", headers={**JSON, "Prefer": "wait=20"})
    assert refused.status_code == 202  # answered without waiting for the quick job
    # (Found by its path: an earlier test's queued job may be recorded as it starts.)
    (job,) = [
        job
        for job in Job.objects.filter(function="gearattach.offload")
        if job.arguments["kwargs"]["request"]["path_info"] == "/offload/item/5/"
    ]
    finish(job)
    waited = client.get("/offload/item/6/", headers={**JSON, "Prefer": "wait=20"})
    assert waited.status_code == 200
