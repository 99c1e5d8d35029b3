"""OpenTelemetry traces of jobs: ``GEARATTACH["TRACING"] = True`` and the ``otel`` extra.

Nothing here is imported while the setting is off: the submitter, the worker and the
attachers look at the setting and import these modules only when it is on.

* :mod:`.carrier`: the W3C trace context that travels with each job, in its payload;
* :mod:`.run`: the worker's span around each run of a task, and its events;
* :mod:`.attaching`: the spans of ``attach()`` and of the hub's subscribers.

The SDK, its exporters and the instrumentation of Django and the database are the
project's choice (docs/tracing.rst): this package only uses OpenTelemetry's API, whose
tracer does nothing until an SDK is set up.
"""

from __future__ import annotations

from typing import Any

try:
    from opentelemetry import trace
except ImportError as exc:  # pragma: no cover - the extra is not installed
    raise ImportError(
        'GEARATTACH["TRACING"] needs OpenTelemetry\'s API: pip install "django-gearattach[otel]"'
    ) from exc

from .. import __version__

#: The instrumentation scope of every span this app records.
SCOPE = "django_gearattach"


#: The tracer provider last asked, and its tracer for this app (the SDK makes a new
#: tracer, and checks its scope, on each call: a cost per job).
_cached: tuple[Any, trace.Tracer] | None = None


def tracer() -> trace.Tracer:
    """The app's tracer, from the tracer provider set up now (the SDK's, or a no-op)."""
    global _cached
    provider = trace.get_tracer_provider()
    cached = _cached
    if cached is None or cached[0] is not provider:
        cached = _cached = (provider, provider.get_tracer(SCOPE, __version__))
    return cached[1]
