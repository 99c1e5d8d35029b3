"""Signed job tokens: bound to their owner, refused alike when forged, altered or expired."""

from __future__ import annotations

import pytest
from django.core import signing
from django.core.exceptions import PermissionDenied
from django.test import RequestFactory

from django_gearattach.models import Job
from django_gearattach.web.tokens import (
    SALT,
    Identity,
    JobRef,
    TokenRefused,
    check_token,
    make_token,
    token_for,
)

ALICE = Identity(user_id=1, session_key="alice-session")
BOB = Identity(user_id=2, session_key="bob-session")
VISITOR = Identity(session_key="visitor-session")


def test_owner_gets_the_job() -> None:
    token = make_token("reports.build", "k1", ALICE)
    assert check_token(token, ALICE) == JobRef("reports.build", "k1", shared=False)


def test_user_token_survives_a_new_session() -> None:
    token = make_token("f", "k", ALICE)
    assert check_token(token, Identity(user_id=1, session_key="after-login")).key == "k"


def test_anonymous_token_is_bound_to_the_session() -> None:
    token = make_token("f", "k", VISITOR)
    assert check_token(token, VISITOR).key == "k"
    with pytest.raises(TokenRefused):
        check_token(token, Identity(session_key="another-visitor"))
    with pytest.raises(TokenRefused):
        check_token(token, Identity())


def test_someone_elses_token_is_refused() -> None:
    with pytest.raises(TokenRefused):
        check_token(make_token("f", "k", ALICE), BOB)


def test_shared_token_works_for_anyone() -> None:
    token = make_token("f", "k", None)
    assert check_token(token, BOB).shared
    assert check_token(token, Identity()).key == "k"


def test_token_reveals_no_session_key() -> None:
    token = make_token("f", "k", VISITOR)
    payload = signing.loads(token, salt=SALT)
    assert "visitor-session" not in repr(payload)
    assert "visitor-session" not in token


@pytest.mark.parametrize(
    "mangle",
    [
        lambda t: t + "x",
        lambda t: t[:-3] + ("AAA" if not t.endswith("AAA") else "BBB"),
        lambda t: "x" + t,
        lambda t: "",
        lambda t: "not a token at all",
        lambda t: t.replace(":", "", 1),
        lambda t: "a" * 5000,
    ],
)
def test_tampered_tokens_are_refused(mangle) -> None:
    token = make_token("f", "k", ALICE)
    with pytest.raises(TokenRefused):
        check_token(mangle(token), ALICE)


def test_forged_token_signed_with_another_key_is_refused() -> None:
    forged = signing.dumps({"f": "f", "k": "k", "b": "*"}, key="not-our-secret", salt=SALT)
    with pytest.raises(TokenRefused):
        check_token(forged, ALICE)


def test_token_with_another_salt_is_refused() -> None:
    # A value this site signed for another purpose is not a job token.
    other = signing.dumps({"f": "f", "k": "k", "b": "*"}, salt="something.else")
    with pytest.raises(TokenRefused):
        check_token(other, ALICE)


def test_signed_but_malformed_payload_is_refused() -> None:
    for value in (["f", "k"], {"f": "f"}, {"f": 1, "k": "k", "b": "*"}):
        with pytest.raises(TokenRefused):
            check_token(signing.dumps(value, salt=SALT), ALICE)


def test_expired_token_is_refused(settings) -> None:
    token = make_token("f", "k", ALICE)
    settings.GEARATTACH = {**settings.GEARATTACH, "TOKEN_MAX_AGE": -1}
    with pytest.raises(TokenRefused):
        check_token(token, ALICE)


def test_every_refusal_says_the_same_thing() -> None:
    messages = set()
    for token, who in [
        (make_token("f", "k", ALICE), BOB),
        ("garbage", ALICE),
        (make_token("f", "k", ALICE) + "x", ALICE),
    ]:
        with pytest.raises(TokenRefused) as info:
            check_token(token, who)
        messages.add(str(info.value))
    assert len(messages) == 1
    assert issubclass(TokenRefused, PermissionDenied)  # Django answers 403


def test_cannot_bind_to_nobody() -> None:
    with pytest.raises(ValueError, match="without a session"):
        make_token("f", "k", Identity())


@pytest.mark.django_db
def test_token_for_request_creates_a_session_for_visitors(django_user_model) -> None:
    from django.contrib.auth.models import AnonymousUser
    from django.contrib.sessions.backends.db import SessionStore

    request = RequestFactory().get("/")
    request.user = AnonymousUser()
    request.session = SessionStore()
    job = Job(function="f", key="k")
    token = token_for(request, job)
    assert request.session.session_key
    assert check_token(token, Identity(session_key=request.session.session_key)).key == "k"
    user = django_user_model.objects.create_user("carol")
    request.user = user
    assert check_token(token_for(request, job), Identity(user_id=user.pk)).key == "k"
