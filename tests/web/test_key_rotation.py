"""Rotating ``SECRET_KEY`` with the old key in ``SECRET_KEY_FALLBACKS`` breaks nothing.

Tokens in open pages, sealed credentials and signatures of queued offload jobs were
made under the old key; they must keep working until they expire or run, and stop
working once the old key leaves the fallbacks.
"""

from __future__ import annotations

import pytest
from django.test import override_settings

from django_gearattach.exceptions import BadPayload
from django_gearattach.models import Job
from django_gearattach.sealing import seal, session_hash, unseal
from django_gearattach.web.capture import sign, verify
from django_gearattach.web.tokens import Identity, TokenRefused, check_token, make_token

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
