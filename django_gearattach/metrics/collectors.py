"""The gearmand queue per server and function, asked at scrape time (admin ``status``).

Scrapes share the probe: while one asks gearmand, concurrent scrapes wait for its
answer, and an answer serves every scrape for :data:`PROBE_CACHE_SECONDS`. A stalled
gearmand then costs one connection and one wait, not one per scrape.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from ..conf import conf
from ..gearman.rendezvous import Address
from ..health import ServerHealth, probe_all

#: Seconds a probe's answer serves the scrapes that follow it.
PROBE_CACHE_SECONDS = 5.0

_probe_lock = threading.Lock()
_probed: tuple[float, tuple[Address, ...], list[ServerHealth]] | None = None


def _fresh(servers: tuple[Address, ...]) -> list[ServerHealth] | None:
    probed = _probed
    if probed is None or probed[1] != servers:
        return None
    return probed[2] if time.monotonic() - probed[0] < PROBE_CACHE_SECONDS else None


def healths() -> list[ServerHealth]:
    """Every server's health: one probe at a time, its answer shared for a few seconds."""
    global _probed
    servers = tuple(conf.SERVERS)
    found = _fresh(servers)
    if found is not None:
        return found
    with _probe_lock:
        found = _fresh(servers)  # another scrape probed while this one waited
        if found is None:
            found = probe_all(list(servers), timeout=min(conf.TIMEOUT, 2.0))
            _probed = (time.monotonic(), servers, found)
        return found


class GearmandCollector(Collector):
    """Asks every server in ``GEARATTACH["SERVERS"]`` (in parallel, 2 s timeout)."""

    def describe(self) -> list[GaugeMetricFamily]:
        # Registering a collector without describe() collects it once to learn its
        # names: a probe (cached) at start-up, before any worker had registered.
        return []

    def collect(self) -> Iterator[GaugeMetricFamily]:
        up = GaugeMetricFamily(
            "gearattach_gearmand_up",
            "1 if the gearmand answered its admin status.",
            labels=["server"],
        )
        queued = GaugeMetricFamily(
            "gearattach_gearmand_jobs_queued",
            "Jobs gearmand holds that no worker has started.",
            labels=["server", "function"],
        )
        running = GaugeMetricFamily(
            "gearattach_gearmand_jobs_running",
            "Jobs gearmand has handed to a worker.",
            labels=["server", "function"],
        )
        workers = GaugeMetricFamily(
            "gearattach_gearmand_workers",
            "Workers registered for the function.",
            labels=["server", "function"],
        )
        for server in healths():
            up.add_metric([server.address], 1.0 if server.reachable else 0.0)
            for f in server.functions:
                queued.add_metric([server.address, f.function], f.waiting)
                running.add_metric([server.address, f.function], f.running)
                workers.add_metric([server.address, f.function], f.workers)
        yield from (up, queued, running, workers)
