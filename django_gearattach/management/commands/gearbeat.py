"""``manage.py gearbeat``: submit the Celery ``beat_schedule``'s periodic tasks.

Run it on one host or on several: each tick is submitted under a key of its own, so
it becomes one job however many schedulers submit it (see
:mod:`django_gearattach.celery.beat`). ``gearworker --beat`` runs the same loop
inside a worker.
"""

from __future__ import annotations

import logging
import signal
import sys
from types import FrameType
from typing import Any

from django.core.management.base import BaseCommand, CommandError


class Command(BaseCommand):
    help = "Submit the periodic tasks of the Celery beat_schedule (CELERY_BEAT_SCHEDULE)."

    def handle(self, *args: Any, **options: Any) -> None:
        from ...celery.app import discover
        from ...celery.beat import Beat

        discover()
        try:
            beat = Beat()
        except (NotImplementedError, ValueError) as exc:
            raise CommandError(str(exc)) from None
        if not beat.entries:
            raise CommandError(
                "no periodic tasks: set app.conf.beat_schedule or CELERY_BEAT_SCHEDULE"
            )
        if options["verbosity"] >= 1:
            logger = logging.getLogger("django_gearattach")
            if not logger.handlers:
                handler = logging.StreamHandler(sys.stderr)
                handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
                logger.addHandler(handler)
                logger.setLevel(logging.INFO)

        def on_signal(signum: int, frame: FrameType | None) -> None:
            beat.stop()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        beat.run()
