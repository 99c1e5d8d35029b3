"""``celery.utils`` counterparts: ``uuid`` and :mod:`.log` (``get_task_logger``)."""

from __future__ import annotations


def uuid() -> str:
    """A new task id (``from celery.utils import uuid``): a 32-character job key."""
    from ...payload import new_key

    return new_key()
