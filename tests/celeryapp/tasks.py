"""Tasks written the way Celery users write them; only the import line differs.

With Celery this module would start ``from celery import shared_task`` and
``from celery.utils.log import get_task_logger``.
"""

import time
from pathlib import Path

from django_gearattach.celery import shared_task
from django_gearattach.celery.utils.log import get_task_logger


class InventoryError(Exception):
    pass


@shared_task
def add(x, y):
    return x + y


@shared_task
def mul(x, y):
    return x * y


@shared_task(bind=True, name="celeryapp.process_rows")
def process_rows(self, total, gate=None):
    """A celery-progress style task: PROGRESS states with current/total meta."""
    if gate:
        deadline = time.monotonic() + 30
        while not Path(gate).exists() and time.monotonic() < deadline:
            time.sleep(0.01)
    for i in range(total):
        time.sleep(0.01)
        self.update_state(
            state="PROGRESS",
            meta={"current": i + 1, "total": total, "description": f"row {i + 1}"},
        )
    return {"current": total, "total": total, "status": "done", "task_id": self.request.id}


@shared_task(bind=True, track_started=True)
def wait_then_report(self, gate, hold):
    """Reports one PROGRESS state, then waits for ``hold`` before finishing."""
    deadline = time.monotonic() + 30
    while not Path(gate).exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    self.update_state(state="PROGRESS", meta={"current": 1, "total": 2})
    while not Path(hold).exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    return "released"


@shared_task
def wait_for(gate):
    """Waits for ``gate``; not track_started, so it is PENDING while it runs (as in Celery)."""
    deadline = time.monotonic() + 30
    while not Path(gate).exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    return "opened"


@shared_task
def check_stock(sku):
    raise InventoryError(f"{sku} is out of stock")


@shared_task
def divide(a, b):
    return a / b


@shared_task
def report_via_current_task(steps):
    from django_gearattach.celery import current_task  # was: from celery import current_task

    for i in range(steps):
        current_task.update_state(state="CRUNCHING", meta={"current": i + 1, "total": steps})
    return steps


# -- retries, the way Celery's docs write them ------------------------------------------

logger = get_task_logger(__name__)


def _count(log_path):
    with open(log_path, "a") as log:
        log.write("x\n")
    return len(Path(log_path).read_text().split())


@shared_task(bind=True, max_retries=3, default_retry_delay=1)
def flaky(self, log_path, failures, gate=None):
    """Fails ``failures`` times, retrying after half a second each time.

    With ``gate``, the first run waits for that file before failing.
    """
    attempt = _count(log_path)
    deadline = time.monotonic() + 30
    while gate and attempt == 1 and not Path(gate).exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    try:
        if attempt <= failures:
            raise ConnectionError(f"attempt {attempt} failed")
    except ConnectionError as exc:
        logger.warning("retrying: %s", exc)
        raise self.retry(exc=exc, countdown=0.5) from exc
    return {"attempt": attempt, "retries": self.request.retries}


@shared_task(
    autoretry_for=(ConnectionError,),
    retry_backoff=1,
    retry_backoff_max=1,
    retry_jitter=False,
    max_retries=2,
)
def auto_flaky(log_path, failures):
    attempt = _count(log_path)
    if attempt <= failures:
        raise ConnectionError(f"attempt {attempt} failed")
    return attempt


class Inventory:
    class Empty(Exception):
        """A nested exception class: rebuilt from its module and qualified name."""


@shared_task
def empty_shelf(shelf):
    raise Inventory.Empty(f"shelf {shelf} is empty")


@shared_task
def missing_user(pk):
    from django.contrib.auth.models import User

    return User.objects.get(pk=pk).username


# -- canvas -----------------------------------------------------------------------------


@shared_task
def xsum(numbers):
    return sum(numbers)


@shared_task(ignore_result=True)
def fire_and_forget(x):
    return x * 2


@shared_task(bind=True, on_conflict="follow_up")
def reindex(self, log_path, gate=None, tag=""):
    """One index rebuild per task id at a time, and one follow-up (``on_conflict``)."""
    with open(log_path, "a") as log:
        log.write(f"start {tag}\n")
    deadline = time.monotonic() + 30
    while gate and not Path(gate).exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    return tag


# -- the edges of exactly once (tests/worker/test_claim.py, test_timelimits.py) ----------


def _wait_for(gate, seconds=30):
    deadline = time.monotonic() + seconds
    while not Path(gate).exists() and time.monotonic() < deadline:
        time.sleep(0.01)


@shared_task(bind=True, max_retries=3)
def retry_once(self, log_path, gate):
    """Logs its start (with the retry count), waits for ``gate``, retries once."""
    with open(log_path, "a") as log:
        log.write(f"start-{self.request.retries}\n")
    _wait_for(gate)
    if self.request.retries == 0:
        raise self.retry(countdown=0)
    return "retried"


@shared_task(soft_time_limit=1.0, time_limit=20)
def gated_step(x, gate, log_path):
    """Returns once ``gate`` exists (well within its soft limit), logging that it did."""
    _wait_for(gate, 0.8)
    with open(log_path, "a") as log:
        log.write(f"returned-{x}\n")
    return x + 1
