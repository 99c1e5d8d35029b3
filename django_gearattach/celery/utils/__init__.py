"""``celery.utils`` counterparts: only :mod:`.log` (``get_task_logger``)."""
