"""The demo's task. ``manage.py gearworker`` finds it because it lives in an app's tasks.py."""

from __future__ import annotations

import math
import os
import socket
import time
import uuid

from django_gearattach import JobContext, task

#: Bounds that keep a demo worker from being tied up by a typo.
MAX_SECONDS = 600
MAX_STEPS = 1000


def check_arguments(seconds: object, steps: object) -> tuple[float, int]:
    """Validated ``(seconds, steps)``; a ValueError says what was wrong."""
    if isinstance(seconds, bool) or not isinstance(seconds, int | float):
        raise ValueError(f"seconds must be a number, got {seconds!r}")
    if not math.isfinite(seconds) or not 0 <= seconds <= MAX_SECONDS:
        raise ValueError(f"seconds must be between 0 and {MAX_SECONDS}, got {seconds!r}")
    if isinstance(steps, bool) or not isinstance(steps, int):
        raise ValueError(f"steps must be a whole number, got {steps!r}")
    if not 1 <= steps <= MAX_STEPS:
        raise ValueError(f"steps must be between 1 and {MAX_STEPS}, got {steps!r}")
    return float(seconds), steps


@task(name="example.slow", bind=True)
def slow(job: JobContext | None, seconds: float = 3, steps: int = 5) -> dict[str, str]:
    """Sleep ``seconds`` in ``steps`` equal steps, reporting progress after each.

    Returns an id unique to this execution, so that every attached client can see
    that they all got the outcome of one and the same run.
    """
    seconds, steps = check_arguments(seconds, steps)
    for i in range(1, steps + 1):
        time.sleep(seconds / steps)
        if job is not None:  # None when called directly, outside a worker
            job.progress(i, steps)
    return {"done": f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex}"}


#: The slowest pace the answer page accepts, in seconds per word.
MAX_PACE = 2.0
ANSWER = (
    "Gearman has carried partial results from workers to clients since its first "
    "protocol, in WORK_DATA packets, and django-gearattach passes them on to every "
    "browser that follows the job. Each word of this answer is a chunk that the task "
    "appends with job.stream(): the worker sends it to gearmand at once and writes it, "
    "with the words before it, in batches to the job's record. A tab that opens the "
    "page later, or reloads it, first gets the words so far from the record, then the "
    "new ones as they come, with no gap and no word twice, because every chunk carries "
    "its run and its sequence number. If the worker dies halfway, another one starts "
    "the answer over, and every tab clears what it showed before the new words arrive. "
    "Once the answer is finished, it is kept with the record, and the next visitor "
    "reads it whole without waiting for anything."
)


def compose(question: str) -> list[str]:
    """The answer's words: the question repeated (as text, whatever it holds), then
    :data:`ANSWER`."""
    return [*f"You asked: {question}".split(), *ANSWER.split()]


@task(name="example.answer", bind=True)
def answer(job: JobContext | None, question: str, pace: float = 0.08) -> dict[str, int]:
    """Stream an answer to ``question`` word by word, ``pace`` seconds apart."""
    if isinstance(pace, bool) or not isinstance(pace, int | float) or not 0 <= pace <= MAX_PACE:
        raise ValueError(f"pace must be between 0 and {MAX_PACE} seconds, got {pace!r}")
    words = compose(str(question))
    for i, word in enumerate(words):
        time.sleep(pace)
        if job is not None:  # None when called directly, outside a worker
            job.stream(word if i == 0 else " " + word)
            job.progress(i + 1, len(words))
    return {"words": len(words)}
