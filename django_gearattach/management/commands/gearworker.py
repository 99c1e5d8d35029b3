"""``manage.py gearworker``: run the registered tasks' workers.

It prints one start-up summary (servers and whether they answer, functions, worker
processes, database, reload) and then logs to stderr. ``--reload`` restarts the
worker processes when code changes, as ``runserver`` does (for development).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Any

from django.core.management.base import BaseCommand, CommandError
from django.db import connection
from django.utils.module_loading import autodiscover_modules

from django_gearattach import __version__
from django_gearattach.conf import conf
from django_gearattach.exceptions import UnknownTask
from django_gearattach.health import probe_all
from django_gearattach.supervisor import Supervisor
from django_gearattach.tasks import get_task, registered_tasks


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
            "--reload",
            action="store_true",
            help="Restart the worker processes when code changes (development, like runserver).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        autodiscover_modules("tasks")
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
        if options["verbosity"] >= 1:
            self.print_summary(selected, options)
        Supervisor(selected, conf.SERVERS, options["concurrency"], reload=options["reload"]).run()

    def print_summary(self, tasks: list[Any], options: dict[str, Any]) -> None:
        from django_gearattach.management import display

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
            )
        )
        stream.flush()


def describe_database() -> str:
    """The default database, without credentials: engine, name and host."""
    settings = connection.settings_dict
    where = f" on {settings['HOST']}:{settings['PORT']}" if settings.get("HOST") else ""
    return f"{connection.vendor} {settings['NAME']}{where}"
