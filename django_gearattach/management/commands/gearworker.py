"""``manage.py gearworker``: run the registered tasks' workers."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

from django.core.management.base import BaseCommand, CommandError
from django.utils.module_loading import autodiscover_modules

from django_gearattach.conf import conf
from django_gearattach.exceptions import UnknownTask
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
            "--beat",
            action="store_true",
            help="Also submit the Celery beat_schedule's periodic tasks (safe on every host: "
            "each tick is one job however many schedulers run).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        autodiscover_modules("tasks")
        if options["beat"] or "django_gearattach.celery.app" in sys.modules:
            # Celery apps' autodiscover_tasks() (lazy, as in Celery) happens now.
            from django_gearattach.celery.app import discover

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
        if options["beat"]:
            from django_gearattach.celery.beat import start_thread

            start_thread()
        Supervisor(selected, conf.SERVERS, options["concurrency"]).run()
