"""The metrics and the receivers that count into them (see the package's docstring)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

try:
    from prometheus_client import Counter, Histogram
except ImportError as exc:  # pragma: no cover - the extra is not installed
    raise ImportError(
        "django_gearattach.metrics needs prometheus_client: "
        'pip install "django-gearattach[metrics]"'
    ) from exc

from .. import attach_timing, signals

if TYPE_CHECKING:
    from ..models import Job

#: Seconds: from a few milliseconds (a hot queue) to an hour.
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)

SUBMITTED = Counter(
    "gearattach_jobs_submitted", "Jobs handed to gearmand by this process.", ["function"]
)
STARTED = Counter("gearattach_jobs_started", "Task attempts a worker started.", ["function"])
FINISHED = Counter("gearattach_jobs_finished", "Job outcomes committed.", ["function", "outcome"])
QUEUE_WAIT = Histogram(
    "gearattach_queue_wait_seconds",
    "From the job's record being created to a worker starting it.",
    ["function"],
    buckets=BUCKETS,
)
RUN_TIME = Histogram(
    "gearattach_run_seconds",
    "From a worker starting the job to its outcome.",
    ["function"],
    buckets=BUCKETS,
)
ATTACH_LATENCY = Histogram(
    "gearattach_attach_latency_seconds",
    "From an attach() or aattach() call to its first event.",
    ["function"],
    buckets=BUCKETS,
)


def on_submitted(sender: Any, job: Job, **kwargs: Any) -> None:
    SUBMITTED.labels(job.function).inc()


def on_started(sender: Any, job: Job, **kwargs: Any) -> None:
    STARTED.labels(job.function).inc()
    if job.started_at is not None and job.created_at is not None:
        wait = (job.started_at - job.created_at).total_seconds()
        QUEUE_WAIT.labels(job.function).observe(max(wait, 0.0))


def on_finished(sender: Any, job: Job, **kwargs: Any) -> None:
    FINISHED.labels(job.function, job.status).inc()
    if job.started_at is not None and job.finished_at is not None:
        ran = (job.finished_at - job.started_at).total_seconds()
        RUN_TIME.labels(job.function).observe(max(ran, 0.0))


def on_attached(function: str, seconds: float) -> None:
    ATTACH_LATENCY.labels(function).observe(seconds)


def connect() -> None:
    """Start counting in this process (``ready()`` calls it)."""
    signals.job_submitted.connect(on_submitted, dispatch_uid="gearattach.metrics")
    signals.job_started.connect(on_started, dispatch_uid="gearattach.metrics")
    signals.job_finished.connect(on_finished, dispatch_uid="gearattach.metrics")
    if on_attached not in attach_timing.observers:
        attach_timing.observers.append(on_attached)


def disconnect() -> None:
    for signal in (signals.job_submitted, signals.job_started, signals.job_finished):
        signal.disconnect(dispatch_uid="gearattach.metrics")
    if on_attached in attach_timing.observers:
        attach_timing.observers.remove(on_attached)
