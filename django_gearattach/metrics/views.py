"""The metrics of a web process: ``path("metrics/", metrics)`` in your URLconf.

Protect it as you would any internal endpoint (a network rule, or your own
decorator): it names your functions and servers. With ``PROMETHEUS_MULTIPROC_DIR``
set (gunicorn, several ASGI workers), it serves the sum over every process writing
there, prometheus_client's multiprocess mode.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from django.http import HttpRequest, HttpResponse
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from .collectors import GearmandCollector


def registry() -> CollectorRegistry:
    """This process's metrics (or all processes' in multiprocess mode), and gearmand's."""
    collected = CollectorRegistry(auto_describe=True)
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        MultiProcessCollector(collected)  # type: ignore[no-untyped-call]
    else:
        collected.register(_Default())
    collected.register(GearmandCollector())
    return collected


class _Default(Collector):
    """The default registry's metrics, as a collector of another registry."""

    def collect(self) -> Iterable[Metric]:
        return REGISTRY.collect()


@require_GET
def metrics(request: HttpRequest) -> HttpResponse:
    """The Prometheus text exposition."""
    return HttpResponse(generate_latest(registry()), content_type=CONTENT_TYPE_LATEST)
