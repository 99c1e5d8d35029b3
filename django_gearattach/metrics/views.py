"""The metrics of a web process: ``path("metrics/", metrics)`` in your URLconf.

It names your functions and servers, so it answers only active staff users and a
scraper that sends ``Authorization: Bearer <GEARATTACH["METRICS_TOKEN"]>``; anyone else
gets 403. The gearmand probe behind it is shared by concurrent scrapes and kept a few
seconds (:mod:`~django_gearattach.metrics.collectors`). With ``PROMETHEUS_MULTIPROC_DIR``
set (gunicorn, several ASGI workers), it serves the sum over every process writing
there, prometheus_client's multiprocess mode.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from django.http import HttpRequest, HttpResponse, HttpResponseForbidden
from django.utils.crypto import constant_time_compare
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from ..conf import conf
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


def allowed(request: HttpRequest) -> bool:
    """Whether ``request`` may read the metrics: the scraper's token, or active staff."""
    token = conf.METRICS_TOKEN
    scheme, _, sent = request.headers.get("Authorization", "").partition(" ")
    if token and scheme.lower() == "bearer" and constant_time_compare(sent.strip(), token):
        return True
    user = getattr(request, "user", None)
    return bool(user is not None and user.is_active and user.is_staff)


@require_GET
def metrics(request: HttpRequest) -> HttpResponse:
    """The Prometheus text exposition, for staff and the scraper (:func:`allowed`)."""
    if not allowed(request):
        return HttpResponseForbidden(
            "The metrics are for staff users and for a scraper that sends "
            "GEARATTACH['METRICS_TOKEN'] as a bearer token.",
            content_type="text/plain; charset=utf-8",
        )
    return HttpResponse(generate_latest(registry()), content_type=CONTENT_TYPE_LATEST)
