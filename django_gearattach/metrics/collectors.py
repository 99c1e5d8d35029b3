"""The gearmand queue per server and function, asked at scrape time (admin ``status``)."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from ..conf import conf
from ..health import probe_all


class GearmandCollector(Collector):
    """Asks every server in ``GEARATTACH["SERVERS"]`` (in parallel, 2 s timeout)."""

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
        for server in probe_all(conf.SERVERS, timeout=min(conf.TIMEOUT, 2.0)):
            up.add_metric([server.address], 1.0 if server.reachable else 0.0)
            for f in server.functions:
                queued.add_metric([server.address, f.function], f.waiting)
                running.add_metric([server.address, f.function], f.running)
                workers.add_metric([server.address, f.function], f.workers)
        yield from (up, queued, running, workers)
