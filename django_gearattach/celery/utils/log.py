"""``from celery.utils.log import get_task_logger`` with the import line changed."""

from __future__ import annotations

import logging

#: The parent of every task logger, as in Celery ("celery.task").
task_logger = logging.getLogger("celery.task")


def get_task_logger(name: str) -> logging.Logger:
    """A logger for a tasks module, a child of ``celery.task`` as Celery makes it.

    Configure it with Django's ``LOGGING`` (the ``celery.task`` logger, or ``celery``).
    """
    if name in ("celery", "celery.task"):
        raise RuntimeError(f"logger name {name!r} is reserved; use __name__")
    logger = logging.getLogger(name)
    if logger.parent is logging.root:
        logger.parent = task_logger
    return logger


def get_logger(name: str) -> logging.Logger:
    return logging.getLogger(name)


__all__ = ["get_logger", "get_task_logger", "task_logger"]
