"""Secrets a job needs but nobody may read, and keyed hashes of what must only be matched.

An offloaded request needs the visitor's session key and CSRF secret in the worker, so
the job record must carry them; anyone who can read the record (a staff user with view
permission, a database dump, a backup) must not be able to use them. They are sealed:
encrypted and authenticated with Fernet (AES-128-CBC with HMAC-SHA256, from the
``cryptography`` package) under a key derived from ``SECRET_KEY``. Values sealed before
a key rotation still open while the old key is listed in ``SECRET_KEY_FALLBACKS``.

What only needs to be compared, never recovered (the session that owns a job), is
stored as a keyed hash: :func:`keyed_hash` gives the hash under the current key and
:func:`keyed_hashes` under every key, for matching across a rotation.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.utils.crypto import salted_hmac

from .exceptions import BadPayload

SALT = "django_gearattach.sealing"


def secret_keys() -> list[str | bytes]:
    """``SECRET_KEY`` first, then ``SECRET_KEY_FALLBACKS``."""
    return [settings.SECRET_KEY, *getattr(settings, "SECRET_KEY_FALLBACKS", [])]


def _fernet(secret: str | bytes) -> Fernet:
    key = salted_hmac(SALT, "fernet", secret=secret, algorithm="sha256").digest()
    return Fernet(base64.urlsafe_b64encode(key))


def seal(value: Any) -> str:
    """``value`` (JSON-ready) encrypted under the current ``SECRET_KEY``."""
    raw = json.dumps(value, cls=DjangoJSONEncoder, separators=(",", ":")).encode()
    return _fernet(settings.SECRET_KEY).encrypt(raw).decode("ascii")


def unseal(token: str) -> Any:
    """The value sealed in ``token``; :class:`BadPayload` if no key opens it."""
    if not isinstance(token, str):
        raise BadPayload("a sealed value must be a string")
    opener = MultiFernet([_fernet(secret) for secret in secret_keys()])
    try:
        raw = opener.decrypt(token.encode("ascii", "replace"))
    except InvalidToken:
        raise BadPayload(
            "a sealed value does not open with SECRET_KEY or SECRET_KEY_FALLBACKS: the web "
            "processes and the workers must share SECRET_KEY (keep a rotated key in "
            "SECRET_KEY_FALLBACKS until the jobs sealed with it have run)"
        ) from None
    return json.loads(raw)


def keyed_hash(purpose: str, value: str, secret: str | bytes | None = None) -> str:
    """A hex HMAC-SHA256 of ``value`` for ``purpose``, under ``secret`` (default SECRET_KEY)."""
    return salted_hmac(f"{SALT}.{purpose}", value, secret=secret, algorithm="sha256").hexdigest()


def keyed_hashes(purpose: str, value: str) -> list[str]:
    """:func:`keyed_hash` under ``SECRET_KEY`` and each fallback, current first."""
    return [keyed_hash(purpose, value, secret) for secret in secret_keys()]


def session_hash(session_key: str | None) -> str:
    """What a job record keeps of the session that owns it ("" for none)."""
    return keyed_hash("session", session_key) if session_key else ""
