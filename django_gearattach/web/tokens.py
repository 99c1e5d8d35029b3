"""Signed tokens that let a browser follow one job, and only the job's owner.

A token names a job (function, key) and one run of it (a rerun of a finished key,
``submit(..., rerun=True)``, is a new run of the same record: the tokens of the run
before do not follow it), and is bound to whoever it was issued to: the user, or for
an anonymous visitor the session. It carries a keyed hash of that
identity, never the session key itself, since tokens end up in HTML. A shared job's
token is bound to nobody. Tokens are signed with ``SECRET_KEY``
(:mod:`django.core.signing`) and expire after ``GEARATTACH["TOKEN_MAX_AGE"]`` seconds.
After a key rotation, tokens signed and bound under a key listed in
``SECRET_KEY_FALLBACKS`` stay valid until they expire.

Every refusal (forged, altered, expired, someone else's) raises the same
:class:`TokenRefused` with the same message, so a refusal reveals nothing about
other jobs; its :attr:`~TokenRefused.reason` says which check refused it, for the
developer's eyes only (pages and answers show it with ``DEBUG`` on).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from django.core import signing
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest
from django.utils.crypto import constant_time_compare, salted_hmac
from django.utils.translation import gettext

from ..conf import conf
from ..exceptions import GearattachError
from ..models import Job
from ..sealing import secret_keys

SALT = "django_gearattach.tokens"
SHARED = "*"


class TokenRefused(GearattachError, PermissionDenied):
    """A token that is forged, altered, expired or issued to someone else.

    Its message is the same for every refusal; ``reason`` says which check refused it
    (shown only with ``DEBUG`` on).
    """

    def __init__(self, reason: str = "") -> None:
        super().__init__(
            gettext(
                "this link does not give access to a job: it is invalid, expired, or was "
                "issued to another user. Open the page that started the job again."
            )
        )
        self.reason = reason


MALFORMED = "the token is malformed: it is not one this app issues"


@dataclass(frozen=True, slots=True)
class JobRef:
    """The job a valid token names."""

    function: str
    key: str
    shared: bool
    #: The outcome without the offloaded page (:func:`~django_gearattach.web.messages.summary`).
    summary: bool = False
    #: The run it was issued for (:func:`run_of`); None: whichever run the record holds.
    run: str | None = None

    def names(self, record: Job) -> bool:
        """Whether ``record`` holds the run this token was issued for."""
        return self.run is None or constant_time_compare(self.run, run_of(record))


@dataclass(frozen=True, slots=True)
class Identity:
    """Who is asking: a user id and/or a session key (either may be missing)."""

    user_id: Any = None
    session_key: str | None = None

    @classmethod
    def of_request(cls, request: HttpRequest) -> Identity:
        """The identity of a request (its user must be loaded: see :meth:`aof_request`)."""
        user = getattr(request, "user", None)
        user_id = user.pk if user is not None and user.is_authenticated else None
        session = getattr(request, "session", None)
        return cls(user_id, session.session_key if session is not None else None)

    @classmethod
    async def aof_request(cls, request: HttpRequest) -> Identity:
        auser = getattr(request, "auser", None)
        user = await auser() if auser is not None else getattr(request, "user", None)
        user_id = user.pk if user is not None and user.is_authenticated else None
        session = getattr(request, "session", None)
        return cls(user_id, session.session_key if session is not None else None)

    @classmethod
    def of_scope(cls, scope: Mapping[str, Any]) -> Identity:
        """The identity of a Channels scope (``AuthMiddlewareStack`` fills it in)."""
        user = scope.get("user")
        user_id = user.pk if user is not None and user.is_authenticated else None
        session = scope.get("session")
        return cls(user_id, session.session_key if session is not None else None)

    def bindings(self, secret: str | bytes | None = None) -> list[str]:
        """This identity's bindings under ``secret`` (default: ``SECRET_KEY``)."""
        found = []
        if self.user_id is not None:
            found.append(_binding(f"user:{self.user_id}", secret))
        if self.session_key:
            found.append(_binding(f"session:{self.session_key}", secret))
        return found

    def all_bindings(self) -> list[str]:
        """:meth:`bindings` under ``SECRET_KEY`` and each of ``SECRET_KEY_FALLBACKS``."""
        return [binding for secret in secret_keys() for binding in self.bindings(secret)]

    def described(self) -> str:
        """Who this is, in words for a developer (no session key)."""
        if self.user_id is not None:
            return f"signed in as user {self.user_id}"
        return (
            "an anonymous visitor with a session"
            if self.session_key
            else ("an anonymous visitor without a session")
        )

    @property
    def anonymous(self) -> bool:
        return self.user_id is None and not self.session_key


def run_of(job: Job) -> str:
    """The run a record holds: a rerun (``submit(..., rerun=True)``) starts a new one."""
    return format(int(job.created_at.timestamp() * 1_000_000), "x")


def _binding(identity: str, secret: str | bytes | None = None) -> str:
    return salted_hmac(SALT, identity, secret=secret, algorithm="sha256").hexdigest()[:24]


def ensure_session(request: HttpRequest) -> str:
    """The request's session key, creating the session for a first-time visitor."""
    session = request.session
    if not session.session_key:
        session.save()
        session.modified = True  # so that SessionMiddleware sends the cookie
    return session.session_key or ""


def make_token(
    function: str,
    key: str,
    identity: Identity | None,
    *,
    summary: bool = False,
    run: str | None = None,
) -> str:
    """A token for the job (function, key), bound to ``identity`` (``None``: shared).

    A ``summary`` token follows the job without receiving an offloaded view's page
    (its HTML, Location or download): what the admin's live widget gets, since the
    page is its user's, not the operator's. ``run`` (:func:`run_of`) ties it to one
    run of the job; :func:`token_for` always does.
    """
    if identity is None:
        bound = SHARED
    else:
        bindings = identity.bindings()
        if not bindings:
            raise ValueError(
                "cannot bind a token to an anonymous visitor without a session; call "
                "ensure_session(request) first, or issue a shared token"
            )
        bound = bindings[0]
    value: dict[str, Any] = {"f": function, "k": key, "b": bound}
    if summary:
        value["s"] = 1
    if run is not None:
        value["r"] = run
    return signing.dumps(value, salt=SALT, compress=True)


def token_for(
    request: HttpRequest, job: Job, *, shared: bool = False, summary: bool = False
) -> str:
    """A token for this run of ``job``, bound to the requesting user (or their session)."""
    run = run_of(job)
    if shared:
        return make_token(job.function, job.key, None, summary=summary, run=run)
    if not (request.user.is_authenticated):
        ensure_session(request)
    identity = Identity.of_request(request)
    return make_token(job.function, job.key, identity, summary=summary, run=run)


def check_token(token: str, identity: Identity, max_age: int | None = None) -> JobRef:
    """The job ``token`` names, if ``identity`` may follow it; else :class:`TokenRefused`."""
    if not isinstance(token, str) or len(token) > 2048:
        raise TokenRefused(MALFORMED)
    age = conf.TOKEN_MAX_AGE if max_age is None else max_age
    try:
        value = signing.loads(token, salt=SALT, max_age=age)
    except signing.SignatureExpired:
        raise TokenRefused(
            f"the token expired: it is older than TOKEN_MAX_AGE ({age} seconds)"
        ) from None
    except (signing.BadSignature, ValueError):
        raise TokenRefused(
            "the token's signature does not match: it was altered or forged, or signed with "
            "a SECRET_KEY that is neither this one nor in SECRET_KEY_FALLBACKS"
        ) from None
    if not isinstance(value, dict):
        raise TokenRefused(MALFORMED)
    function, key, bound = value.get("f"), value.get("k"), value.get("b")
    if not (isinstance(function, str) and isinstance(key, str) and isinstance(bound, str)):
        raise TokenRefused(MALFORMED)
    if bound != SHARED and not any(
        constant_time_compare(bound, mine) for mine in identity.all_bindings()
    ):
        raise TokenRefused(
            "the token is bound to another user or session than this request's "
            f"({identity.described()}); tokens of anonymous visitors die when they sign in"
        )
    run = value.get("r")
    if run is not None and not isinstance(run, str):
        raise TokenRefused(MALFORMED)
    return JobRef(function, key, bound == SHARED, summary=value.get("s") == 1, run=run)
