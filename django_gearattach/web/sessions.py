"""Who a session belongs to now, asked as Django's next request from it would ask.

A long-lived connection (the dashboard's websocket) and the worker that runs an
offloaded request both need the user of a session as the session stands *now*: a
logout empties it, a password change makes its hash stale, deactivating the user makes
the authentication backend refuse them. :func:`session_user` asks Django's own
``get_user``, with one difference: when only a key in ``SECRET_KEY_FALLBACKS`` verifies
the session's hash, Django moves the session to a new key, whose cookie nobody here can
send to the browser; the session keeps its key (its hash is brought up to date all the
same, and saved with it).
"""

from __future__ import annotations

from importlib import import_module
from types import SimpleNamespace
from typing import Any

from django.conf import settings
from django.contrib.sessions.backends.base import SessionBase


def session_user(session: SessionBase) -> Any:
    """The user ``session`` is signed in as now (``AnonymousUser`` when none)."""
    from django.contrib.auth import get_user

    cycle_key = session.cycle_key
    session.cycle_key = lambda: None  # type: ignore[method-assign]
    try:
        return get_user(SimpleNamespace(session=session))  # type: ignore[arg-type]
    finally:
        session.cycle_key = cycle_key  # type: ignore[method-assign]


def load_session(session_key: str | None) -> SessionBase:
    """The project's session ``session_key``, read afresh from its store."""
    store: type[SessionBase] = import_module(settings.SESSION_ENGINE).SessionStore
    return store(session_key)
