"""``manage.py gearworker``: run the registered tasks' workers.

It prints one start-up summary (servers and whether they answer, functions, worker
processes, database, reload) and then logs to stderr. ``--reload`` restarts the
worker processes when code changes, as ``runserver`` does (for development).
``--metrics-port`` serves the Prometheus metrics of all its worker processes
(prometheus_client's multiprocess mode; ``django_gearattach.metrics`` installed).
"""

from __future__ import annotations

import argparse
import atexit
import logging
import os
import shutil
import sys
import tempfile
from typing import Any

from django.apps import apps
from django.core.management.base import BaseCommand, CommandError
from django.db import connection
from django.utils.module_loading import autodiscover_modules

from ... import __version__
from ...conf import conf
from ...exceptions import UnknownTask
from ...health import probe_all
from ...tasks import get_task, registered_tasks
from ...worker.reloader import restart
from ...worker.supervisor import Supervisor

#: Set in the environment when gearworker made the multiprocess directory itself.
OWNED_DIR = "GEARATTACH_METRICS_DIR_OWNED"


def port_number(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 < value < 65536:
        raise argparse.ArgumentTypeError("must be between 1 and 65535")
    return value


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


class Command(BaseCommand):
    help = "Run Gearman workers for the registered tasks (found in each app's tasks.py)."

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--function",
            action="append",
            dest="functions",
            metavar="NAME",
            help="Only run this Gearman function (repeatable). Default: every task.",
        )
        parser.add_argument(
            "--concurrency", type=positive_int, default=1, help="Worker processes (default 1)."
        )
        parser.add_argument(
            "--async-concurrency",
            type=positive_int,
            metavar="N",
            help="Jobs of async def tasks each worker process runs at once on its event "
            'loop (default GEARATTACH["ASYNC_CONCURRENCY"], 100).',
        )
        parser.add_argument(
            "--max-jobs-per-child",
            type=positive_int,
            metavar="N",
            help="Replace a worker process after it ran N jobs (it finishes its job first).",
        )
        parser.add_argument(
            "--max-memory-per-child",
            type=positive_int,
            metavar="MB",
            help="Replace a worker process after a job that leaves it using more than MB "
            "megabytes of resident memory.",
        )
        parser.add_argument(
            "--reload",
            action="store_true",
            help="Restart the worker processes when code changes (development, like runserver).",
        )
        parser.add_argument(
            "--metrics-port",
            type=port_number,
            metavar="PORT",
            help="Serve the workers' Prometheus metrics on this port (needs the metrics extra).",
        )
        parser.add_argument(
            "--metrics-address",
            default="127.0.0.1",
            metavar="ADDRESS",
            help="The address --metrics-port listens on (default 127.0.0.1).",
        )
        parser.add_argument(
            "--beat",
            action="store_true",
            help="Also submit the Celery beat_schedule's periodic tasks (safe on every host: "
            "each tick is one job however many schedulers run).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        autodiscover_modules("tasks")
        if options["beat"] or "django_gearattach.celery.app" in sys.modules:
            # Celery apps' autodiscover_tasks() (lazy, as in Celery) happens now.
            from ...celery.app import discover

            discover()
        tasks = registered_tasks()
        if options["functions"]:
            try:
                selected = [get_task(name) for name in options["functions"]]
            except UnknownTask as exc:
                raise CommandError(str(exc)) from None
        else:
            selected = list(tasks.values())
        if not selected:
            raise CommandError("no tasks are registered: decorate functions with @task")
        if options["verbosity"] >= 1:
            logger = logging.getLogger("django_gearattach")
            if not logger.handlers:
                handler = logging.StreamHandler(sys.stderr)
                handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
                logger.addHandler(handler)
                logger.setLevel(logging.DEBUG if options["verbosity"] > 1 else logging.INFO)
        metrics_url = self.serve_metrics(options) if options["metrics_port"] else None
        if options["verbosity"] >= 1:
            self.print_summary(selected, options, metrics_url)
        if options["beat"]:
            from ...celery.beat import start_thread

            start_thread()
        Supervisor(
            selected,
            conf.SERVERS,
            options["concurrency"],
            reload=options["reload"],
            max_jobs_per_child=options["max_jobs_per_child"],
            max_memory_per_child=options["max_memory_per_child"],
            async_concurrency=options["async_concurrency"],
        ).run()

    def serve_metrics(self, options: dict[str, Any]) -> str:
        """Start the metrics HTTP server of this supervisor; return its URL."""
        if not apps.is_installed("django_gearattach.metrics"):
            raise CommandError(
                "--metrics-port needs 'django_gearattach.metrics' in INSTALLED_APPS "
                '(and pip install "django-gearattach[metrics]")'
            )
        if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            # prometheus_client picks its multiprocess mode when it is imported, which
            # Django's set-up has done: run again with the variable set.
            os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="gearworker-metrics-")
            os.environ[OWNED_DIR] = "1"
            restart()
        if os.environ.get(OWNED_DIR):
            directory = os.environ["PROMETHEUS_MULTIPROC_DIR"]
            atexit.register(_remove_if_supervisor, directory, os.getpid())
        from prometheus_client import start_http_server

        from ...metrics.views import registry

        address, port = options["metrics_address"], options["metrics_port"]
        try:
            start_http_server(port, addr=address, registry=registry())
        except OSError as exc:
            raise CommandError(
                f"--metrics-port {port}: cannot listen on {address}: {exc}"
            ) from None
        return f"http://{address}:{port}/metrics"

    def print_summary(
        self, tasks: list[Any], options: dict[str, Any], metrics_url: str | None
    ) -> None:
        from .. import display

        stream: Any = self.stdout._out  # the real stream: OutputWrapper adds line endings
        console = display.console_for(stream, no_color=options.get("no_color", False))
        console.print(
            display.worker_summary(
                version=__version__,
                pid=os.getpid(),
                servers=probe_all(conf.SERVERS, timeout=min(conf.TIMEOUT, 2.0)),
                functions=sorted(t.name for t in tasks),
                processes=options["concurrency"],
                database=describe_database(),
                reload=options["reload"],
                metrics=metrics_url,
            )
        )
        stream.flush()


def _remove_if_supervisor(directory: str, supervisor: int) -> None:
    # Forked worker processes inherit the exit hook; only the supervisor removes.
    if os.getpid() == supervisor:
        shutil.rmtree(directory, ignore_errors=True)


def describe_database() -> str:
    """The default database, without credentials: engine, name and host."""
    settings = connection.settings_dict
    where = f" on {settings['HOST']}:{settings['PORT']}" if settings.get("HOST") else ""
    return f"{connection.vendor} {settings['NAME']}{where}"
