"""A token is a capability for exactly what it was issued for, on every URL that accepts one.

Every URL that takes a token (the JSON status, long-poll, SSE, download, the websocket,
and an offloaded view's own ``?gearattach=`` and ``?gearattach-result=`` links, as a
browser and as a program asks them) is asked with every kind of token this app issues,
by its holder and by someone else. Security review 3, finding 1: the admin's summary
token, copied from a job page by a staff user with only ``view_job``, opened the user's
own response (their CSV, their redirect with signed cookies and flash messages, their
page with a ``Set-Cookie`` carrying their CSRF secret) at the view's URL.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
import pytest_asyncio
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings as django_settings
from django.contrib.auth.models import Permission, User
from django.test import AsyncClient, Client
from django.urls import reverse

from tests.asgi import application
from tests.helpers import sse_messages
from tests.web.test_offload import finish, started

pytest_plugins = ["tests.webfixtures"]

pytestmark = [pytest.mark.usefixtures("cluster", "hub")]

PAGE = "/offload/sync/"
CSV = "/offload/csv/"
REDIRECT = "/preferences/"
FORM = {"name": "ada", "password": "hunter2-pw", "pin": "4711-pin", "language": "fr"}
SECRET_COLOUR = "aubergine-secret"


@dataclass
class Person:
    user: User | None
    session_key: str

    @property
    def cookie(self) -> str:
        return f"{django_settings.SESSION_COOKIE_NAME}={self.session_key}"

    def client(self) -> AsyncClient:
        client = AsyncClient()
        if self.session_key:
            client.cookies[django_settings.SESSION_COOKIE_NAME] = self.session_key
        return client


@dataclass
class Scene:
    owner: Person
    operator: Person  # staff, view_job only
    stranger: Person
    #: path -> (the owner's token, the admin's summary token issued to the operator)
    tokens: dict[str, tuple[str, str]]


def _person(username: str, **fields: Any) -> tuple[Person, Client]:
    user = User.objects.create_user(username, password="pw", **fields)
    client = Client()
    client.force_login(user)
    return Person(user, client.session.session_key or ""), client


def _build_scene(gate: str) -> Scene:
    owner, browser = _person("ada")
    operator, desk = _person("viewer", is_staff=True)
    operator.user.user_permissions.add(Permission.objects.get(codename="view_job"))
    stranger, _ = _person("stranger")
    tokens = {}
    jobs = []
    for path, response in [
        (PAGE, lambda: browser.get(PAGE, {"colour": SECRET_COLOUR, "gate": gate})),
        (CSV, lambda: browser.get(CSV, {"gate": gate})),
        (REDIRECT, lambda: browser.post(f"{REDIRECT}?gate={gate}", FORM)),
    ]:
        job, token = started(response())
        # The operator opens the job's admin page while it is queued or running: the
        # live widget there carries a summary token bound to the operator.
        admin_page = desk.get(reverse("admin:django_gearattach_job_change", args=[job.pk]))
        assert admin_page.status_code == 200
        summary = admin_page.context["gearattach_live_token"]
        assert summary in admin_page.content.decode()
        tokens[path] = (token, summary)
        jobs.append(job)
    Path(gate).touch()
    for job in jobs:
        finish(job)
    return Scene(owner, operator, stranger, tokens)


@pytest_asyncio.fixture
async def scene(gate: Path) -> AsyncIterator[Scene]:
    yield await sync_to_async(_build_scene)(str(gate))


# -- what each URL answers ---------------------------------------------------------------
FULL, SUMMARY, REFUSED, ABSENT = "full", "summary", "refused (403)", "absent (404)"

#: Words only the owner's own response holds, whatever form it takes.
PRIVATE_MARKERS = (SECRET_COLOUR, "year,total", "/preferences/saved/", "totals.csv", "ada")


def _private(text: str) -> bool:
    return any(marker in text for marker in PRIVATE_MARKERS)


async def _json_endpoint(client: AsyncClient, token: str, endpoint: str) -> tuple[str, str]:
    suffix = f"{endpoint}/" if endpoint else ""
    response = await client.get(f"/gearattach/jobs/{token}/{suffix}", {"timeout": "0"})
    if response.status_code == 403:
        return REFUSED, response.content.decode()
    if response.status_code == 404:
        return ABSENT, response.content.decode()
    assert response.status_code == 200, response
    if endpoint == "download":
        body = b"".join(response.streaming_content).decode()  # type: ignore[attr-defined]
        return FULL, body
    if endpoint == "events":
        chunks = [
            c.decode() if isinstance(c, bytes) else c
            async for c in response.streaming_content  # type: ignore[attr-defined]
        ]
        outcome = sse_messages("".join(chunks))[-1]
    elif endpoint == "poll":
        outcome = response.json()["messages"][-1]
    else:
        outcome = response.json()["outcome"]
    return _kind_of(outcome), json.dumps(outcome)


def _kind_of(outcome: dict[str, Any]) -> str:
    assert outcome["type"] == "complete", outcome
    page = {k: outcome.get(k) for k in ("html", "body", "redirect", "download")}
    return FULL if any(v is not None for v in page.values()) else SUMMARY


async def _websocket(person: Person, token: str) -> tuple[str, str]:
    headers = [(b"cookie", person.cookie.encode())] if person.session_key else []
    socket = WebsocketCommunicator(application, f"/ws/gearattach/{token}/", headers)
    assert (await socket.connect(timeout=5))[0]
    received = []
    try:
        while True:
            output = await socket.receive_output(10)
            if output["type"] == "websocket.close":
                code = output.get("code", 1000)
                break
            received.append(json.loads(output["text"]))
    finally:
        await socket.disconnect()
    if code == 4403:
        return REFUSED, ""
    if code == 4404:
        return ABSENT, ""
    assert code == 1000, code
    return _kind_of(received[-1]), json.dumps(received)


async def _view(client: AsyncClient, path: str, param: str, token: str, accept: str) -> Any:
    return await client.get(path, {param: token}, headers={"accept": accept})


async def _view_link(
    client: AsyncClient, path: str, param: str, token: str, accept: str
) -> tuple[str, str]:
    response = await _view(client, path, param, token, accept)
    if response.status_code == 403:
        text = response.content.decode()
        assert not response.cookies, "a refused link must set no cookie"
        return REFUSED, text
    if response.status_code == 404:
        return ABSENT, response.content.decode()
    body = b"".join(response.streaming_content) if response.streaming else response.content
    served = [body.decode(errors="replace"), response.get("Location", "")]
    served += [response.get("Content-Disposition", ""), str(response.cookies)]
    return FULL, " ".join(served)


HTML = "text/html"
PROGRAM = "application/json"
URLS = [
    "status",
    "poll",
    "events",
    "download",
    "websocket",
    "view ?gearattach (browser)",
    "view ?gearattach (program)",
    "view ?gearattach-result",
]


async def ask(url: str, person: Person, path: str, token: str) -> tuple[str, str]:
    client = person.client()
    if url == "websocket":
        return await _websocket(person, token)
    if url in ("status", "poll", "events", "download"):
        return await _json_endpoint(client, token, "" if url == "status" else url)
    if url == "view ?gearattach (browser)":
        return await _view_link(client, path, "gearattach", token, HTML)
    if url == "view ?gearattach (program)":
        return await _view_link(client, path, "gearattach", token, PROGRAM)
    return await _view_link(client, path, "gearattach-result", token, HTML)


#: What the admin's summary token, in its holder's hands, may do at each URL: follow the
#: job's progress and outcome, without the user's response in any form.
SUMMARY_TOKEN = {
    "status": SUMMARY,
    "poll": SUMMARY,
    "events": SUMMARY,
    "download": ABSENT,
    "websocket": SUMMARY,
    "view ?gearattach (browser)": REFUSED,
    "view ?gearattach (program)": REFUSED,
    "view ?gearattach-result": REFUSED,
}
OWNER_TOKEN = dict.fromkeys(URLS, FULL)
# The download URL serves only a finished view's file; the others' link is absent.
NO_FILE = {"download": ABSENT}


@pytest.mark.parametrize("path", [PAGE, CSV, REDIRECT])
async def test_every_url_with_every_kind_of_token(scene: Scene, path: str) -> None:
    owners, summary = scene.tokens[path]
    expected_owner = OWNER_TOKEN | ({} if path == CSV else NO_FILE)
    cases = [
        ("the owner's token, by the owner", scene.owner, owners, expected_owner),
        ("the admin's summary token, by its operator", scene.operator, summary, SUMMARY_TOKEN),
        ("the owner's token, by the operator", scene.operator, owners, {}),
        ("the owner's token, by a stranger", scene.stranger, owners, {}),
        ("the admin's summary token, by a stranger", scene.stranger, summary, {}),
        ("the admin's summary token, by the owner", scene.owner, summary, {}),
    ]
    leaks: list[tuple[str, str]] = []
    for label, person, token, expected in cases:
        for url in URLS:
            kind, text = await ask(url, person, path, token)
            if kind != FULL and _private(text):
                leaks.append((label, url))
            assert kind == expected.get(url, REFUSED), (label, url, kind, text[:300])
    assert not leaks, leaks


async def test_the_summary_token_replays_nothing_of_the_users_response(scene: Scene) -> None:
    """The three requests of the review, exactly: the CSV, the redirect, the page."""
    operator = scene.operator.client()
    _, csv_token = scene.tokens[CSV]
    exported = await _view(operator, CSV, "gearattach-result", csv_token, "*/*")
    assert exported.status_code == 403
    assert "Content-Disposition" not in exported
    _, redirect_token = scene.tokens[REDIRECT]
    moved = await _view(operator, REDIRECT, "gearattach", redirect_token, HTML)
    assert moved.status_code == 403
    assert "Location" not in moved
    assert not moved.cookies  # no signed "language", no "theme", no messages
    _, page_token = scene.tokens[PAGE]
    page = await _view(operator, PAGE, "gearattach", page_token, HTML)
    assert page.status_code == 403
    assert SECRET_COLOUR not in page.content.decode()
    assert django_settings.CSRF_COOKIE_NAME not in page.cookies
    # The user still gets their own response.
    owners, _ = scene.tokens[PAGE]
    mine = await _view(scene.owner.client(), PAGE, "gearattach", owners, HTML)
    assert mine.status_code == 200
    assert SECRET_COLOUR in mine.content.decode()


def _anonymous_and_shared() -> tuple[Person, str, str]:
    """An anonymous visitor's job (a token bound to their session), a shared view's
    job (a token bound to nobody), and a page token of ``PAGE`` for asking at ``CSV``."""
    visitor = Client()
    job, visitors = started(visitor.get(PAGE, {"colour": SECRET_COLOUR}))
    shared_job, shared = started(visitor.get("/offload/shared/", {"year": "2031"}))
    for each in (job, shared_job):
        finish(each)
    owner = Person(None, visitor.session.session_key or "")
    return owner, visitors, shared


async def test_session_and_shared_tokens_at_every_url(scene: Scene) -> None:
    owner, visitors, shared = await sync_to_async(_anonymous_and_shared)()
    nobody = Person(None, "")  # no cookie at all
    expected_owner = OWNER_TOKEN | NO_FILE
    cases = [
        ("an anonymous visitor's token, by them", owner, PAGE, visitors, expected_owner),
        ("an anonymous visitor's token, without their session", nobody, PAGE, visitors, {}),
        ("an anonymous visitor's token, by a signed-in user", scene.stranger, PAGE, visitors, {}),
        ("a shared view's token, by anyone", nobody, "/offload/shared/", shared, expected_owner),
        (
            "a shared view's token, by a user",
            scene.stranger,
            "/offload/shared/",
            shared,
            expected_owner,
        ),
    ]
    for label, person, path, token, expected in cases:
        for url in URLS:
            kind, text = await ask(url, person, path, token)
            assert kind == expected.get(url, REFUSED), (label, url, kind, text[:300])
    # A token names its view: at another offloaded view's links it opens nothing.
    owners, _ = scene.tokens[PAGE]
    for url in ("view ?gearattach (browser)", "view ?gearattach-result"):
        kind, _ = await ask(url, scene.owner, CSV, owners)
        assert kind == ABSENT, url


# -- a token is for one run of its job (review 3, finding 6) ---------------------------------
def _finished_then_rerun_by_someone_else() -> tuple[Person, str, Person, str]:
    from django.test import RequestFactory

    from django_gearattach import submit
    from django_gearattach.web.tokens import token_for

    first, _ = _person("first-owner")
    second, _ = _person("second-owner")

    def token_of(person: Person, job: Any) -> str:
        request = RequestFactory().get("/")
        request.user = person.user
        return token_for(request, job)

    job = submit("tests.add", [20, 22], key="reused-key", owner=first.user)
    first_token = token_of(first, finish(job))
    again = submit("tests.add", [1, 1], key="reused-key", rerun=True, owner=second.user)
    assert again.pk == job.pk  # the same record, now the second owner's run
    second_token = token_of(second, finish(again))
    return first, first_token, second, second_token


async def test_a_token_never_follows_a_later_run_of_its_job() -> None:
    """Rerunning a finished key took over its record, and the first owner's token (valid
    for a day) then followed the new owner's run: its arguments' outcome, at every URL."""
    first, first_token, second, second_token = await sync_to_async(
        _finished_then_rerun_by_someone_else
    )()
    for url in ("status", "poll", "events", "websocket"):
        kind, text = await ask(url, first, "/", first_token)
        assert kind == ABSENT, (url, kind, text)
        assert '"result": 2' not in text
        kind, text = await ask(url, second, "/", second_token)
        assert kind == SUMMARY, (url, kind)  # a plain task's outcome: no page parts
        assert "2" in text


# -- a refusal says what happened (review 3, "also seen") ----------------------------------
def _refusals(scene: Scene) -> dict[str, tuple[Person, str, str]]:
    """Each kind of refused link: who asks, with which token, and the reason DEBUG names."""
    from django.core import signing

    from django_gearattach.web.tokens import SALT

    owners, summary = scene.tokens[PAGE]
    value = signing.loads(owners, salt=SALT)
    with mock.patch("time.time", return_value=time.time() - 2 * 86400):
        expired = signing.dumps(value, salt=SALT, compress=True)  # signed two days ago
    return {
        "someone else's": (scene.stranger, owners, "bound to another user or session"),
        "the admin's summary token": (scene.operator, summary, "summary token"),
        "altered": (scene.owner, owners[:-3] + "abc", "signature does not match"),
        "expired": (scene.owner, expired, "older than TOKEN_MAX_AGE"),
    }


@pytest.mark.parametrize("debug", [False, True])
async def test_a_refused_link_says_what_happened_and_with_debug_which_check(
    scene: Scene, settings: Any, debug: bool
) -> None:
    """A foreign or stale token got a bare "403 Forbidden", with no reason even with DEBUG."""
    settings.DEBUG = debug
    refusals = await sync_to_async(_refusals)(scene)
    for kind, (person, token, reason) in refusals.items():
        page = await _view(person.client(), PAGE, "gearattach", token, HTML)
        assert page.status_code == 403, kind
        html = page.content.decode()
        assert "This link does not give access to a job" in html, (kind, html[:300])
        assert "Open the page that started the job again" in html
        assert (reason in html) is debug, (kind, reason, html)
        assert SECRET_COLOUR not in html
        program = await _view(person.client(), PAGE, "gearattach", token, PROGRAM)
        assert program.status_code == 403
        body = program.json()
        assert "does not give access to a job" in body["error"]
        assert (reason in body.get("reason", "")) is debug, (kind, body)
        if kind == "the admin's summary token":
            continue  # the status endpoint serves it (the summary)
        status = await person.client().get(f"/gearattach/jobs/{token}/")
        assert status.status_code == 403
        assert (reason in status.json().get("reason", "")) is debug, kind
