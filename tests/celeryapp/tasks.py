"""Tasks written the way Celery users write them; only the import line differs.

With Celery this module would start ``from celery import shared_task``.
"""

import time
from pathlib import Path

from django_gearattach.celery import shared_task


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
