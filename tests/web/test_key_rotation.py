"""Rotating ``SECRET_KEY`` with the old key in ``SECRET_KEY_FALLBACKS`` breaks nothing.

Tokens in open pages, sealed credentials and signatures of queued offload jobs were
made under the old key; they must keep working until they expire or run, and stop
working once the old key leaves the fallbacks.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth.models import User
from django.db import connection
from django.test import Client, override_settings

from django_gearattach.exceptions import BadPayload
from django_gearattach.models import Job
from django_gearattach.sealing import seal, session_hash, unseal
from django_gearattach.testing import Gearmand, WorkerProcess, wait_for_workers
from django_gearattach.web.capture import sign, verify
from django_gearattach.web.messages import OFFLOAD_FUNCTION
from django_gearattach.web.tokens import Identity, TokenRefused, check_token, make_token
from tests.web.test_offload import finish, revisit, started

ROOT = Path(__file__).resolve().parents[2]

OLD, NEW = "the-old-secret-key-" + "o" * 40, "the-new-secret-key-" + "n" * 40
VISITOR = Identity(session_key="visitor-session")
REQUEST = {"method": "GET", "path_info": "/x/", "sealed": None}


def made_under_old_key() -> tuple[str, str, str, str]:
    with override_settings(SECRET_KEY=OLD, SECRET_KEY_FALLBACKS=[]):
        return (
            make_token("f", "k", VISITOR),
            seal({"session_key": "s"}),
            sign("app.views:report", REQUEST, "k"),
            session_hash("visitor-session"),
        )


def test_everything_made_under_a_fallback_key_still_works() -> None:
    token, sealed, signature, hashed = made_under_old_key()
    with override_settings(SECRET_KEY=NEW, SECRET_KEY_FALLBACKS=[OLD]):
        assert check_token(token, VISITOR).key == "k"
        assert unseal(sealed) == {"session_key": "s"}
        assert verify("app.views:report", REQUEST, "k", signature)
        assert session_hash("visitor-session") != hashed  # new records: the new key
        assert Job(session_hash=hashed).belongs_to(None, "visitor-session")


def test_nothing_made_under_a_retired_key_works() -> None:
    token, sealed, signature, hashed = made_under_old_key()
    with override_settings(SECRET_KEY=NEW, SECRET_KEY_FALLBACKS=[]):
        with pytest.raises(TokenRefused):
            check_token(token, VISITOR)
        with pytest.raises(BadPayload, match="SECRET_KEY_FALLBACKS"):
            unseal(sealed)
        assert not verify("app.views:report", REQUEST, "k", signature)
        assert not Job(session_hash=hashed).belongs_to(None, "visitor-session")


def test_a_tampered_or_foreign_sealed_value_is_refused() -> None:
    sealed = seal({"session_key": "s"})
    with pytest.raises(BadPayload):
        unseal(sealed[:-4] + "AAAA")
    with pytest.raises(BadPayload):
        unseal("not a sealed value")
    with pytest.raises(BadPayload):
        unseal(None)


def test_a_signature_covers_every_field() -> None:
    signature = sign("app.views:report", REQUEST, "k")
    assert not verify("app.views:report", {**REQUEST, "method": "POST"}, "k", signature)
    assert not verify("app.views:other", REQUEST, "k", signature)
    assert not verify("app.views:report", REQUEST, "another-key", signature)
    assert not verify("app.views:report", REQUEST, "k", None)


# -- signed-in users across a rotation (security review 3, finding 5) -----------------------
@pytest.fixture
def rotated_worker(gearmand: Gearmand, transactional_db: None) -> Iterator[Callable[[], None]]:
    """Start (when called) a worker that runs with the new key and the old one as fallback."""
    started: list[WorkerProcess] = []

    def start() -> None:
        env = {
            "GEARATTACH_TEST_DATABASE": str(connection.settings_dict["NAME"]),
            "GEARATTACH_TEST_SECRET_KEY": NEW,
            "GEARATTACH_TEST_KEY_FALLBACKS": OLD,
        }
        if os.environ.get("DATABASE_URL"):
            env["DATABASE_URL"] = os.environ["DATABASE_URL"]
        worker = WorkerProcess([gearmand.address], "tests.settings", env=env, cwd=str(ROOT))
        started.append(worker.start())
        wait_for_workers(gearmand.address, OFFLOAD_FUNCTION)

    yield start
    for worker in started:
        worker.cleanup()


def signed_in_under_the_old_key(username: str) -> Client:
    with override_settings(SECRET_KEY=OLD, SECRET_KEY_FALLBACKS=[]):
        user = User.objects.create_user(username, password="pw")
        browser = Client()
        browser.force_login(user)  # the session's password hash is made with the old key
    return browser


def page_user(response: Any) -> str:
    return str(response.content.decode().split('id="user">')[1].split("<")[0])


def test_an_offloaded_request_keeps_its_user_signed_in_across_a_rotation(
    rotated_worker: Callable[[], None],
) -> None:
    """Before the fix, the user was signed out: the web process moved their session to a
    new key (Django does when a fallback key verifies it) without sending the cookie,
    and the worker did the same for a request queued before the rotation."""
    before = signed_in_under_the_old_key("queued-before")
    with override_settings(SECRET_KEY=OLD, SECRET_KEY_FALLBACKS=[]):
        queued, queued_token = started(before.get("/offload/sync/"))
    with override_settings(SECRET_KEY=NEW, SECRET_KEY_FALLBACKS=[OLD]):
        rotated_worker()
        finish(queued)
        page = revisit(before, "/offload/sync/", queued_token)
        assert page.status_code == 200
        assert page_user(page) == "queued-before"
        # Still signed in: @login_required lets them in (a signed-out visitor gets 302).
        assert before.get("/offload/private/").status_code == 202

        after = signed_in_under_the_old_key("asking-after")
        response = after.get("/offload/sync/")
        job, token = started(response)
        # Its session moved to a new key: the answer says so, as SessionMiddleware would.
        assert response.cookies[settings.SESSION_COOKIE_NAME].value == after.session.session_key
        finish(job)
        page = revisit(after, "/offload/sync/", token)
        assert page.status_code == 200
        assert page_user(page) == "asking-after"
