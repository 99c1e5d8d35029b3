"""Calls the tasks the way a view would, and prints what came back as JSON."""

import json

from django.core.management.base import BaseCommand
from django.db import transaction
from proj.celery import debug_task

from demoapp.models import Widget
from demoapp.tasks import add, count_widgets, fetch, long_job, mul, rename_widget, xsum
from django_gearattach.celery import chain, chord, group  # was: from celery import ...
from django_gearattach.celery.result import AsyncResult  # was: from celery.result import


class Command(BaseCommand):
    def handle(self, *args, **options):
        out = {}
        out["add"] = add.delay(4, 4).get(timeout=10)
        out["state"] = AsyncResult(add.delay(1, 1).id).state
        try:
            rename_widget.delay(999999, "x").get(timeout=10)
        except Widget.DoesNotExist as exc:
            out["does_not_exist"] = str(exc)
        with transaction.atomic():
            Widget.objects.create(name="new")
            count_widgets.delay_on_commit()
        out["chain"] = chain(add.s(2, 2), mul.s(8))().get(timeout=20)
        out["group"] = group(add.s(i, i) for i in range(5))().get(timeout=20)
        out["chord"] = chord(add.s(i, i) for i in range(5))(xsum.s()).get(timeout=20)
        out["retry"] = fetch.delay("http://example.invalid", 1).get(timeout=20)
        messages = []
        long_job.delay(3).get(timeout=20, on_message=messages.append)
        out["messages"] = [m["status"] for m in messages]
        result = debug_task.delay()
        out["debug_task"] = [result.get(timeout=10), result.state]
        self.stdout.write(json.dumps(out))
