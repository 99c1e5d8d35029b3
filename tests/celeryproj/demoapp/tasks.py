# Create your tasks here
import time

from demoapp.models import Widget
from django_gearattach.celery import shared_task  # was: from celery import shared_task
from django_gearattach.celery.utils.log import get_task_logger  # was: from celery.utils.log

logger = get_task_logger(__name__)


@shared_task
def add(x, y):
    return x + y


@shared_task
def mul(x, y):
    return x * y


@shared_task
def xsum(numbers):
    return sum(numbers)


@shared_task
def count_widgets():
    return Widget.objects.count()


@shared_task
def rename_widget(widget_id, name):
    w = Widget.objects.get(id=widget_id)
    w.name = name
    w.save()


@shared_task(bind=True, max_retries=2)
def fetch(self, url, fail_times):
    try:
        if self.request.retries < fail_times:
            raise ConnectionError(f"{url} unreachable")
    except ConnectionError as exc:
        logger.warning("fetch %s failed, retrying", url)
        raise self.retry(exc=exc, countdown=1) from exc
    return {"url": url, "retries": self.request.retries}


@shared_task(bind=True)
def long_job(self, steps):
    for i in range(steps):
        time.sleep(0.3)
        self.update_state(state="PROGRESS", meta={"current": i + 1, "total": steps})
    return "done"


@shared_task
def heartbeat(path):
    with open(path, "a") as log:
        log.write("beat\n")
