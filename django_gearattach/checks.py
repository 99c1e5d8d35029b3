"""System checks (``manage.py check``, ``check --deploy``); every id is stable.

Errors:

* ``gearattach.E001``: ``GEARATTACH`` is not a dict.
* ``gearattach.E002``: ``GEARATTACH["SERVERS"]`` is malformed.
* ``gearattach.E003``: another ``GEARATTACH`` value is malformed or out of range.

Warnings:

* ``gearattach.W001`` (deploy): ``GEARATTACH["SERVERS"]`` is not set.
* ``gearattach.W002``: ``GEARATTACH`` has a key this app does not know (a typo?).
* ``gearattach.W003`` (deploy): a configured gearmand does not answer.
* ``gearattach.W004``: a gearmand address is neither loopback nor private.
* ``gearattach.W005``: the websocket routes are used but ``channels`` is not installed.
* ``gearattach.W006``: the websocket routes are used but ``ASGI_APPLICATION`` is unset.
* ``gearattach.W007`` (deploy): immediate mode is on.

Only the deploy checks touch the network: W003 connects, and W004 resolves host
names under ``--deploy`` (without it, W004 looks at IP addresses only).
"""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import Iterable
from importlib.util import find_spec
from typing import Any

from django.apps import AppConfig, apps
from django.conf import settings
from django.core.checks import CheckMessage, Error, Tags, Warning, register

from .conf import DEFAULTS, conf
from .exceptions import GearattachError
from .gearman.rendezvous import Address

SECURITY_HINT = (
    "Gearman has no authentication: anyone who can reach gearmand can submit, read and "
    "cancel your jobs. Bind it to loopback or a private network and firewall it; see "
    "'Deployment > Security' in the django-gearattach docs (docs/deployment.rst#security)."
)
ROUTING_MODULE = "django_gearattach.routing"


def _user_settings() -> Any:
    return getattr(settings, "GEARATTACH", {})


def _servers() -> list[Address] | None:
    """The configured addresses, or None when the setting is unusable (E001/E002 say why)."""
    user = _user_settings()
    if not isinstance(user, dict):
        return None
    try:
        return conf.SERVERS
    except (TypeError, ValueError):
        return None


@register("gearattach")
def check_settings(
    app_configs: Iterable[AppConfig] | None = None, **kwargs: Any
) -> list[CheckMessage]:
    user = _user_settings()
    if user is None:
        return []
    if not isinstance(user, dict):
        return [
            Error(
                f"GEARATTACH must be a dict, not {type(user).__name__}.",
                hint='For example GEARATTACH = {"SERVERS": ["127.0.0.1:4730"]}.',
                id="gearattach.E001",
            )
        ]
    messages: list[CheckMessage] = []
    messages += _check_servers(user)
    for name in sorted(set(user) - set(DEFAULTS)):
        hint = f"Known keys: {', '.join(sorted(DEFAULTS))}."
        if name in _RENAMED:
            hint = f"It was replaced by {_RENAMED[name]}."
        messages.append(
            Warning(
                f"GEARATTACH[{name!r}] is not a setting of django-gearattach; it is ignored.",
                hint=hint,
                id="gearattach.W002",
            )
        )
    for name in sorted(set(user) & set(DEFAULTS) - {"SERVERS"}):
        problem = _value_problem(name)
        if problem:
            messages.append(
                Error(
                    f"GEARATTACH[{name!r}] = {user[name]!r} {problem}.",
                    hint="See the settings page of the django-gearattach docs.",
                    id="gearattach.E003",
                )
            )
    return messages


def _check_servers(user: dict[str, Any]) -> list[CheckMessage]:
    if "SERVERS" not in user:
        return []
    value = user["SERVERS"]
    hint = 'A list of "host:port" strings, e.g. ["10.0.0.5:4730", "10.0.0.6:4730"].'
    if isinstance(value, str) or not isinstance(value, (list, tuple)):
        return [
            Error(
                f'GEARATTACH["SERVERS"] must be a list of "host:port" strings, '
                f"not {type(value).__name__}.",
                hint=hint,
                id="gearattach.E002",
            )
        ]
    if not value:
        return [Error('GEARATTACH["SERVERS"] is empty.', hint=hint, id="gearattach.E002")]
    messages: list[CheckMessage] = []
    for item in value:
        try:
            Address.parse(item)
        except ValueError as exc:
            messages.append(
                Error(f'GEARATTACH["SERVERS"]: {exc}.', hint=hint, id="gearattach.E002")
            )
    return messages


_POSITIVE = {"MAX_ATTEMPTS", "TIMEOUT", "RETRY_INTERVAL", "RETRY_INTERVAL_MAX", "CHECK_INTERVAL"}
_POSITIVE |= {"TOKEN_MAX_AGE", "LONGPOLL_MAX_TIMEOUT", "RECOVERY_INTERVAL", "STREAM_MAX_AGE"}
_POSITIVE |= {"LEASE", "CANCEL_CHECK_INTERVAL", "ASYNC_CONCURRENCY"}
#: Limits where 0 means "no limit".
_NOT_NEGATIVE = {"STREAM_LIMIT_PER_CLIENT", "STREAM_LIMIT_PER_PROCESS", "OFFLOAD_QUEUE_LIMIT"}
_NOT_NEGATIVE |= {"OFFLOAD_MAX_UPLOAD_SIZE"}
#: Keys of earlier versions, and what replaced them.
_RENAMED = {
    "POLL_INTERVAL": "RETRY_INTERVAL (attachers no longer poll: job events are pushed)",
    "POLL_INTERVAL_MAX": "RETRY_INTERVAL_MAX",
}


def _value_problem(name: str) -> str:
    try:
        value = getattr(conf, name)
    except (TypeError, ValueError, GearattachError) as exc:
        return f"cannot be read ({exc})"
    if name == "DEFAULT_PRIORITY" and value not in ("high", "normal", "low"):
        return 'must be "high", "normal" or "low"'
    booleans = {"IMMEDIATE", "STATIC_ASSETS", "TRACING", "TRACE_CONTEXT_IN_PAGE"}
    if name in booleans and not isinstance(_user_settings()[name], bool):
        return "must be True or False"
    if name == "TRACE_URL" and value and "{trace_id}" not in value:
        return 'must contain "{trace_id}", where the trace id goes'
    if name == "TRACING" and value and find_spec("opentelemetry.trace") is None:
        return (
            "needs OpenTelemetry's API, which is not installed: "
            'pip install "django-gearattach[otel]"'
        )
    if name in _POSITIVE and not value > 0:
        return "must be greater than 0"
    negative_ok = {"PROGRESS_WRITE_INTERVAL", "RECOVERY_GRACE", "CANCEL_GRACE"}
    negative_ok |= {"WAIT_THREADS_PER_PROCESS", "WSGI_MAX_WAIT"}
    if name in _NOT_NEGATIVE | negative_ok and value < 0:
        return "must not be negative"
    return ""


@register("gearattach", deploy=True)
def check_deploy_settings(
    app_configs: Iterable[AppConfig] | None = None, **kwargs: Any
) -> list[CheckMessage]:
    user = _user_settings()
    messages: list[CheckMessage] = []
    if isinstance(user, dict) and "SERVERS" not in user:
        messages.append(
            Warning(
                'GEARATTACH["SERVERS"] is not set, so the default 127.0.0.1:4730 is used.',
                hint="Name the gearmand servers explicitly; every web and worker process "
                "must list the same ones.",
                id="gearattach.W001",
            )
        )
    if isinstance(user, dict) and user.get("IMMEDIATE"):
        messages.append(
            Warning(
                'GEARATTACH["IMMEDIATE"] is True: jobs run inside the submitting request.',
                hint="Immediate mode is a unit-test convenience; turn it off in production.",
                id="gearattach.W007",
            )
        )
    return messages


@register("gearattach", deploy=True)
def check_servers_reachable(
    app_configs: Iterable[AppConfig] | None = None, **kwargs: Any
) -> list[CheckMessage]:
    from .health import probe_all

    servers = _servers()
    if not servers or conf.IMMEDIATE:
        return []
    return [
        Warning(
            f"gearmand {health.address} does not answer: {health.error}",
            hint="Start it, or fix GEARATTACH['SERVERS']; jobs routed to it fail over to "
            "the next server meanwhile.",
            id="gearattach.W003",
        )
        for health in probe_all(servers, timeout=min(conf.TIMEOUT, 3.0))
        if not health.reachable
    ]


def _is_public(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return not (ip.is_loopback or ip.is_private or ip.is_link_local)


def _public_addresses(address: Address, names: bool) -> list[str]:
    """Public IPs of an IP-literal address (``names=False``) or of a host name (``True``)."""
    try:
        ip = ipaddress.ip_address(address.host)
    except ValueError:
        if not names or address.host == "localhost":
            return []
        try:
            infos = socket.getaddrinfo(address.host, address.port, proto=socket.IPPROTO_TCP)
        except OSError:
            return []  # W003 reports hosts that do not answer
        found = {ipaddress.ip_address(info[4][0]) for info in infos}
        return sorted(str(ip) for ip in found if _is_public(ip))
    return [] if names or not _is_public(ip) else [str(ip)]


def _exposure(names: bool) -> list[CheckMessage]:
    messages: list[CheckMessage] = []
    for address in _servers() or []:
        public = _public_addresses(address, names)
        if public:
            via = f" (resolves to {', '.join(public)})" if names else ""
            messages.append(
                Warning(
                    f"gearmand {address}{via} is neither a loopback nor a private address.",
                    hint=SECURITY_HINT,
                    id="gearattach.W004",
                )
            )
    return messages


@register(Tags.security, "gearattach")
def check_server_exposure(
    app_configs: Iterable[AppConfig] | None = None, **kwargs: Any
) -> list[CheckMessage]:
    """W004 for servers given as IP addresses (no network needed)."""
    return _exposure(names=False)


@register(Tags.security, "gearattach", deploy=True)
def check_server_exposure_of_names(
    app_configs: Iterable[AppConfig] | None = None, **kwargs: Any
) -> list[CheckMessage]:
    """W004 for servers given as host names: resolved, so only under ``--deploy``."""
    return _exposure(names=True)


def websocket_routes_used() -> bool:
    """Whether this project serves :mod:`django_gearattach.routing`.

    True when the source of the ASGI application's module (``ASGI_APPLICATION``, else
    the ``asgi`` module next to the settings module) mentions it. The source is read,
    not imported: importing an ASGI module builds the application. Whether the routes
    happen to be imported in this process says nothing: a test run, a benchmark or a
    tool may import them in a project that serves no websockets.
    """
    path = getattr(settings, "ASGI_APPLICATION", None)
    if path:
        module = path.rpartition(".")[0]
    else:
        settings_module = os.environ.get("DJANGO_SETTINGS_MODULE", "")
        package = settings_module.rpartition(".")[0]
        if not package:
            return False
        module = f"{package}.asgi"
    try:
        spec = find_spec(module)
    except (ImportError, ValueError):
        return False
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        return False
    try:
        with open(spec.origin, encoding="utf-8") as source:
            return ROUTING_MODULE in source.read()
    except OSError:
        return False


@register("gearattach")
def check_websocket_setup(
    app_configs: Iterable[AppConfig] | None = None, **kwargs: Any
) -> list[CheckMessage]:
    if not websocket_routes_used():
        return []
    messages: list[CheckMessage] = []
    if not apps.is_installed("channels"):
        messages.append(
            Warning(
                f"The websocket routes ({ROUTING_MODULE}) are used, but 'channels' is not "
                "in INSTALLED_APPS.",
                hint="Add 'channels' to INSTALLED_APPS (and 'daphne' at its top, so that "
                "runserver serves websockets too).",
                id="gearattach.W005",
            )
        )
    if not getattr(settings, "ASGI_APPLICATION", None):
        messages.append(
            Warning(
                f"The websocket routes ({ROUTING_MODULE}) are used, but ASGI_APPLICATION "
                "is not set.",
                hint="Set ASGI_APPLICATION = 'yourproject.asgi.application' (the "
                "ProtocolTypeRouter that includes websocket_urlpatterns).",
                id="gearattach.W006",
            )
        )
    return messages
