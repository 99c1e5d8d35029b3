"""Settings, read from ``settings.GEARATTACH`` at access time (so override_settings works)."""

from __future__ import annotations

import functools
from typing import Any

from django.conf import settings as django_settings

from .gearman.rendezvous import Address, parse_addresses

DEFAULTS: dict[str, Any] = {
    # gearmand servers as "host:port" strings; keys are routed among them by hashing.
    "SERVERS": ["127.0.0.1:4730"],
    # A job that kills its worker this many times is failed instead of retried again.
    "MAX_ATTEMPTS": 3,
    # Seconds to wait for a gearmand reply before giving up on a connection.
    "TIMEOUT": 10.0,
    # Seconds an attacher waits before it tries again after a lost connection: first,
    # then at most (doubling in between).
    "RETRY_INTERVAL": 0.02,
    "RETRY_INTERVAL_MAX": 0.5,
    # Seconds between the checks an attacher makes that a job it waits on to start is
    # still in gearmand (a safety net: starts and ends are pushed, never polled for).
    "CHECK_INTERVAL": 5.0,
    # Workers: seconds between recovery sweeps, and how long a queued or running record
    # must have existed before a sweep resubmits it when gearmand no longer knows it.
    "RECOVERY_INTERVAL": 10.0,
    "RECOVERY_GRACE": 10.0,
    # Seconds a running job's claim on its record lasts unless renewed (every third of
    # it while the task runs): a copy of the job that finds a live claim waits for its
    # outcome instead of running; past it (its worker died), the next copy runs.
    "LEASE": 30.0,
    # Minimum seconds between progress writes to the job record (every WORK_STATUS is sent).
    "PROGRESS_WRITE_INTERVAL": 0.5,
    # Default priority of submitted jobs: "high", "normal" or "low".
    "DEFAULT_PRIORITY": "normal",
    # Run submitted jobs in the submitting process, without gearmand (unit tests only).
    "IMMEDIATE": False,
    # Seconds a progress-page token stays valid (web layer: tokens.py).
    "TOKEN_MAX_AGE": 24 * 3600,
    # The longest ?timeout= (seconds) the long-poll endpoint accepts.
    "LONGPOLL_MAX_TIMEOUT": 60.0,
    # Open streams (SSE, waiting long-polls, websockets) allowed at once per client (a
    # user, a session or an address) and per process; 0 means no limit (streams.py).
    "STREAM_LIMIT_PER_CLIENT": 20,
    "STREAM_LIMIT_PER_PROCESS": 2000,
    # Seconds after which an SSE stream or websocket ends with {"type": "reconnect"}.
    "STREAM_MAX_AGE": 600.0,
    # Prefer: wait (web/waiting.py): sync views waiting at once per process under ASGI
    # (each holds a thread), and the longest wait under WSGI (0: not honoured there, as
    # a waiting request holds a whole worker).
    "WAIT_THREADS_PER_PROCESS": 20,
    "WSGI_MAX_WAIT": 0.0,
    # Request headers an offloaded request carries to the worker in clear, beyond the
    # built-in list (web/capture.py): names such as "X-Region". Never credentials: a
    # view that needs one names it in @offload(headers=[...]), which seals it.
    "CAPTURED_HEADERS": [],
    # @offload answers 503 instead of queueing another job when this many offloaded
    # requests wait in the queue already; 0 means no limit.
    "OFFLOAD_QUEUE_LIMIT": 500,
    # @offload answers 413 to a request whose body (files included) is larger than this
    # many bytes; 0 means no limit.
    "OFFLOAD_MAX_UPLOAD_SIZE": 10 * 1024 * 1024,
    # Names (fnmatch patterns) of tasks this process may submit though it does not define
    # them and no worker registers them now: tasks of workers outside the project, or
    # ["*"] where web processes do not import the task modules. Any other such name is
    # refused by submit() (presence.py).
    "EXTERNAL_TASKS": [],
    # The widget's script and style: False serves them from the app's URLs (no static
    # files set-up needed); True links them with {% static %} (web/assets.py).
    "STATIC_ASSETS": False,
    # The bearer token a Prometheus scraper sends to the metrics view (metrics/views.py);
    # None: staff users only.
    "METRICS_TOKEN": None,
    # Seconds between two refreshes of the admin dashboard's live charts (per process).
    "DASHBOARD_REFRESH": 5.0,
    # Workers: default time limits of every task in seconds (None: none), overridden by
    # @task(time_limit=..., soft_time_limit=...) (timelimits.py).
    "TIME_LIMIT": None,
    "SOFT_TIME_LIMIT": None,
    # Workers: seconds between two looks for a cancel request while a job runs, and
    # seconds a cancelled task has to stop by itself before its process is ended.
    "CANCEL_CHECK_INTERVAL": 0.5,
    "CANCEL_GRACE": 5.0,
    # Workers: jobs of ``async def`` tasks that one worker process runs at once on its
    # event loop (gearworker --async-concurrency overrides it; worker/asyncrunner.py).
    "ASYNC_CONCURRENCY": 100,
    # OpenTelemetry traces (the otel extra, docs/tracing.rst): the caller's trace context
    # travels with each job, and workers and attachers record spans. Off: nothing of
    # OpenTelemetry is imported.
    "TRACING": False,
    # The processing page tells a frontend tracer the job's trace (<meta name="traceparent">).
    "TRACE_CONTEXT_IN_PAGE": False,
    # A link for trace ids on the admin dashboard, e.g. "https://jaeger.example/trace/{trace_id}".
    "TRACE_URL": "",
}


@functools.lru_cache(maxsize=16)
def _parsed_servers(raw: Any) -> tuple[Address, ...]:
    return tuple(parse_addresses(raw))


class Settings:
    def _get(self, name: str) -> Any:
        user = getattr(django_settings, "GEARATTACH", {}) or {}
        return user.get(name, DEFAULTS[name])

    @property
    def SERVERS(self) -> list[Address]:
        raw = self._get("SERVERS")
        if isinstance(raw, str):  # iterating it would give one "server" per character
            raise ValueError(
                f"GEARATTACH['SERVERS'] must be a list of 'host:port' strings, not the "
                f"string {raw!r}: write [{raw!r}]"
            )
        # Read on every submit and attach: parse each distinct list once.
        key = tuple(raw) if isinstance(raw, (list, tuple)) else raw
        try:
            return list(_parsed_servers(key))
        except TypeError:  # unhashable: parse it (and raise the usual error) uncached
            return parse_addresses(raw)

    @property
    def MAX_ATTEMPTS(self) -> int:
        return int(self._get("MAX_ATTEMPTS"))

    @property
    def TIMEOUT(self) -> float:
        return float(self._get("TIMEOUT"))

    @property
    def RETRY_INTERVAL(self) -> float:
        return float(self._get("RETRY_INTERVAL"))

    @property
    def RETRY_INTERVAL_MAX(self) -> float:
        return float(self._get("RETRY_INTERVAL_MAX"))

    @property
    def CHECK_INTERVAL(self) -> float:
        return float(self._get("CHECK_INTERVAL"))

    @property
    def RECOVERY_INTERVAL(self) -> float:
        return float(self._get("RECOVERY_INTERVAL"))

    @property
    def RECOVERY_GRACE(self) -> float:
        return float(self._get("RECOVERY_GRACE"))

    @property
    def LEASE(self) -> float:
        return float(self._get("LEASE"))

    @property
    def PROGRESS_WRITE_INTERVAL(self) -> float:
        return float(self._get("PROGRESS_WRITE_INTERVAL"))

    @property
    def DEFAULT_PRIORITY(self) -> str:
        return str(self._get("DEFAULT_PRIORITY"))

    @property
    def TOKEN_MAX_AGE(self) -> int:
        return int(self._get("TOKEN_MAX_AGE"))

    @property
    def LONGPOLL_MAX_TIMEOUT(self) -> float:
        return float(self._get("LONGPOLL_MAX_TIMEOUT"))

    @property
    def STREAM_LIMIT_PER_CLIENT(self) -> int:
        return int(self._get("STREAM_LIMIT_PER_CLIENT"))

    @property
    def STREAM_LIMIT_PER_PROCESS(self) -> int:
        return int(self._get("STREAM_LIMIT_PER_PROCESS"))

    @property
    def STREAM_MAX_AGE(self) -> float:
        return float(self._get("STREAM_MAX_AGE"))

    @property
    def WAIT_THREADS_PER_PROCESS(self) -> int:
        return int(self._get("WAIT_THREADS_PER_PROCESS"))

    @property
    def WSGI_MAX_WAIT(self) -> float:
        return float(self._get("WSGI_MAX_WAIT"))

    @property
    def CAPTURED_HEADERS(self) -> list[str]:
        value = self._get("CAPTURED_HEADERS")
        if isinstance(value, str) or not all(isinstance(name, str) for name in value):
            raise ValueError(
                f"GEARATTACH['CAPTURED_HEADERS'] must be a list of header names, such as "
                f'["X-Region"], not {value!r}'
            )
        return list(value)

    @property
    def OFFLOAD_QUEUE_LIMIT(self) -> int:
        return int(self._get("OFFLOAD_QUEUE_LIMIT"))

    @property
    def OFFLOAD_MAX_UPLOAD_SIZE(self) -> int:
        return int(self._get("OFFLOAD_MAX_UPLOAD_SIZE"))

    @property
    def EXTERNAL_TASKS(self) -> list[str]:
        raw = self._get("EXTERNAL_TASKS")
        if not isinstance(raw, (list, tuple)) or not all(isinstance(p, str) for p in raw):
            raise TypeError(
                "GEARATTACH['EXTERNAL_TASKS'] must be a list of task names (or fnmatch "
                f"patterns such as 'reports.*'), not {raw!r}"
            )
        return list(raw)

    @property
    def STATIC_ASSETS(self) -> bool:
        return bool(self._get("STATIC_ASSETS"))

    @property
    def DASHBOARD_REFRESH(self) -> float:
        return float(self._get("DASHBOARD_REFRESH"))

    @property
    def METRICS_TOKEN(self) -> str | None:
        value = self._get("METRICS_TOKEN")
        if value is not None and (not isinstance(value, str) or len(value) < 16):
            raise ValueError(
                "GEARATTACH['METRICS_TOKEN'] must be a string of at least 16 characters "
                "(a random one: secrets.token_urlsafe()), or None"
            )
        return value

    @property
    def IMMEDIATE(self) -> bool:
        return bool(self._get("IMMEDIATE"))

    @property
    def TIME_LIMIT(self) -> float | None:
        from .timelimits import checked_limit

        return checked_limit("GEARATTACH['TIME_LIMIT']", self._get("TIME_LIMIT"))

    @property
    def SOFT_TIME_LIMIT(self) -> float | None:
        from .timelimits import checked_limit

        return checked_limit("GEARATTACH['SOFT_TIME_LIMIT']", self._get("SOFT_TIME_LIMIT"))

    @property
    def CANCEL_CHECK_INTERVAL(self) -> float:
        return float(self._get("CANCEL_CHECK_INTERVAL"))

    @property
    def CANCEL_GRACE(self) -> float:
        return float(self._get("CANCEL_GRACE"))

    @property
    def ASYNC_CONCURRENCY(self) -> int:
        return int(self._get("ASYNC_CONCURRENCY"))

    @property
    def TRACING(self) -> bool:
        return bool(self._get("TRACING"))

    @property
    def TRACE_CONTEXT_IN_PAGE(self) -> bool:
        return bool(self._get("TRACE_CONTEXT_IN_PAGE"))

    @property
    def TRACE_URL(self) -> str:
        return str(self._get("TRACE_URL") or "")


conf = Settings()
