"""The job record: one row per (function, key), owned by the workers that run it."""

from __future__ import annotations

import uuid
from typing import Any

from django.conf import settings
from django.db import models
from django.db.models import Case, F, When
from django.utils import timezone
from django.utils.crypto import constant_time_compare
from django.utils.translation import gettext_lazy as _

from .policies import OnConflict, RunReason
from .sealing import keyed_hashes


class Status(models.TextChoices):
    SCHEDULED = "scheduled", _("Scheduled")
    QUEUED = "queued", _("Queued")
    RUNNING = "running", _("Running")
    COMPLETE = "complete", _("Complete")
    FAILED = "failed", _("Failed")
    LOST = "lost", _("Lost")
    CANCELLED = "cancelled", _("Cancelled")


#: Waiting (scheduled for later, or queued) or running: a job that has not finished.
ACTIVE = (Status.SCHEDULED, Status.QUEUED, Status.RUNNING)
#: Not started yet: gearmand holds the job (or should, see the recovery sweep).
WAITING = (Status.SCHEDULED, Status.QUEUED)
FINISHED = (Status.COMPLETE, Status.FAILED, Status.LOST, Status.CANCELLED)


def started(**fields: Any) -> dict[str, Any]:
    """The fields of a record a worker has started (its running mark), with ``fields``.

    A cancel request applies to the run it was made for: a new run starts without one.
    """
    return {
        "status": Status.RUNNING.value,
        "started_at": timezone.now(),
        "finished_at": None,
        "cancel_requested_at": None,
        # A new run streams from its first chunk (its run number, stream_run, is counted
        # with its attempt: records.Update.increment_attempts).
        "stream_seq": 0,
        **fields,
    }


def ended(status: Status, error: str | None = None) -> dict[str, Any]:
    """The fields of a record that has finished with ``status`` (``error`` left as it
    is when None); its claim on the record is dropped."""
    if status not in FINISHED:
        raise ValueError(f"{status!r} is not a finished status")
    fields = {"status": Status(status).value, "finished_at": timezone.now(), "lease_until": None}
    return fields if error is None else fields | {"error": error}


def new_run(
    reason: Any, status: Status, outcome: Status | None = None, **fields: Any
) -> dict[str, Any]:
    """The fields of a record whose key starts its next run (``run`` + 1), waiting with
    ``status``: the last run's outcome, reports and claim are cleared, and its result
    is kept as the previous one when it completed. ``outcome`` is the last run's status
    when the row does not hold it yet (a worker hands its run over); ``reason`` may be
    an expression (the successor's, from the row)."""
    kept: dict[str, Any]
    if outcome is None:  # the row holds the last run's outcome: keep it if it completed
        complete = When(status=Status.COMPLETE.value, then=F("result"))
        complete_at = When(status=Status.COMPLETE.value, then=F("finished_at"))
        complete_run = When(status=Status.COMPLETE.value, then=F("run_number"))
        kept = {
            "previous_result": Case(complete, default=F("previous_result")),
            "previous_finished_at": Case(complete_at, default=F("previous_finished_at")),
            "previous_run_number": Case(complete_run, default=F("previous_run_number")),
        }
    elif outcome == Status.COMPLETE:
        kept = {
            "previous_result": fields.pop("result", None),
            "previous_finished_at": timezone.now(),
            "previous_run_number": F("run_number"),
        }
    else:
        kept = {}
    return {
        "status": Status(status).value,
        "run_number": F("run_number") + 1,
        "run_reason": reason,
        "progress_numerator": 0,
        "progress_denominator": 0,
        "data": None,
        "result": None,
        "error": "",
        "traceback": "",
        "exception_module": "",
        "exception_qualname": "",
        "attempts": 0,
        "retries": 0,
        "started_at": None,
        "finished_at": None,
        "lease_until": None,
        "cancel_requested_at": None,  # a cancel of the last run is not one of this run
        **kept,
        **fields,
    }


class JobQuerySet(models.QuerySet["Job"]):
    def for_key(self, function: str, key: str) -> JobQuerySet:
        return self.filter(function=function, key=key)

    def active(self) -> JobQuerySet:
        return self.filter(status__in=ACTIVE)

    def waiting(self) -> JobQuerySet:
        return self.filter(status__in=WAITING)

    def scheduled(self) -> JobQuerySet:
        return self.filter(status=Status.SCHEDULED)

    def finished(self) -> JobQuerySet:
        return self.filter(status__in=FINISHED)

    def failed(self) -> JobQuerySet:
        return self.filter(status=Status.FAILED)

    def running(self) -> JobQuerySet:
        return self.filter(status=Status.RUNNING)

    # -- status transitions: every status a record takes is written through these (the
    # worker's hot path writes plain SQL with the values of started() and ended())
    def end(self, status: Status, error: str | None = None) -> int:
        """Finish these jobs with ``status`` (complete, failed, lost or cancelled), now;
        their claim is dropped. Returns how many rows changed.

        A job with a run waiting to follow it (a follow-up or a replacement) starts that
        run instead (:meth:`start_successor`): its key is not finished.
        """
        count = self.filter(next_reason="").update(**ended(status, error))
        return count + self.exclude(next_reason="").start_successor(status)

    def start_successor(self, outcome: Status | None = None, **fields: Any) -> int:
        """Make these records' waiting runs (a follow-up or a replacement) their current
        run, queued: the successor's arguments, the run number + 1. ``outcome``: the
        status of the run that ended, when the row does not say it yet (its ``fields``,
        the result, come with it). Only records with a waiting run change. The owner and
        ``created_at`` stay: what followed the run before (a browser's token) follows
        this one too."""
        return (
            self.exclude(next_reason="")
            .filter(status__in=(*FINISHED, Status.RUNNING))
            .update(
                **new_run(
                    F("next_reason"),
                    Status.QUEUED,
                    outcome,
                    on_conflict=F("next_reason"),
                    arguments=F("next_arguments"),
                    next_reason="",
                    next_arguments=None,
                    **fields,
                )
            )
        )

    def restart(self, reason: RunReason, status: Status, **fields: Any) -> int:
        """Start these finished records' next run (a rerun, an expired or stale outcome),
        waiting with ``status`` and ``fields``: a new run of the key, created now (the
        browser tokens of the run before do not follow it). A record with a run waiting
        to follow it is left alone (:meth:`start_successor` starts that one)."""
        fields = {"created_at": timezone.now(), **fields}
        return self.finished().filter(next_reason="").update(**new_run(reason, status, **fields))

    def fail(self, error: str) -> int:
        return self.end(Status.FAILED, error)

    def lose(self, error: str) -> int:
        """Mark these jobs lost: gearmand no longer holds them and they will not run."""
        return self.end(Status.LOST, error)

    def requeue(self, status: Status = Status.QUEUED, **fields: Any) -> int:
        """Put these running jobs back to waiting in gearmand, queued or scheduled (a run
        that is over, or that never started): their claim and any cancel request made
        for that run are dropped; ``fields`` are written too."""
        if status not in WAITING:
            raise ValueError(f"{status!r} is not a waiting status")
        # A cancel request was for the run that ended: the next one starts without it.
        return self.update(status=status, lease_until=None, cancel_requested_at=None, **fields)

    def owned_by(self, user: Any, session_key: str | None = None) -> JobQuerySet:
        """The jobs of ``user``, or for an anonymous visitor those of their session."""
        if user is not None and user.is_authenticated:
            return self.filter(owner=user)
        if not session_key:
            return self.none()
        return self.filter(owner=None, session_hash__in=keyed_hashes("session", session_key))


class Job(models.Model):
    id = models.UUIDField(_("id"), primary_key=True, default=uuid.uuid4, editable=False)
    function = models.CharField(_("function"), max_length=255)
    key = models.CharField(_("key"), max_length=63)
    status = models.CharField(
        _("status"), max_length=16, choices=Status.choices, default=Status.QUEUED
    )
    priority = models.CharField(_("priority"), max_length=8, default="normal")
    arguments = models.JSONField(
        _("arguments"),
        null=True,
        blank=True,
        help_text=_("{'args': [...], 'kwargs': {...}} as submitted."),
    )
    progress_numerator = models.BigIntegerField(_("progress numerator"), default=0)
    progress_denominator = models.BigIntegerField(_("progress denominator"), default=0)
    data = models.JSONField(
        _("data"), null=True, blank=True, help_text=_("The last WORK_DATA payload.")
    )
    result = models.JSONField(_("result"), null=True, blank=True)
    error = models.TextField(_("error"), blank=True)
    traceback = models.TextField(_("traceback"), blank=True)
    exception_module = models.CharField(
        _("exception module"),
        max_length=255,
        blank=True,
        help_text=_("The module of the exception the task raised."),
    )
    exception_qualname = models.CharField(
        _("exception qualname"),
        max_length=255,
        blank=True,
        help_text=_("Its qualified name (Widget.DoesNotExist)."),
    )
    server = models.CharField(
        _("server"), max_length=255, blank=True, help_text=_("gearmand host:port.")
    )
    handle = models.CharField(
        _("handle"), max_length=64, blank=True, help_text=_("gearmand job handle.")
    )
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="gearattach_jobs",
        verbose_name=_("owner"),
    )
    session_hash = models.CharField(
        _("session hash"),
        max_length=64,
        blank=True,
        help_text=_(
            "A keyed hash of the key of the session that submitted the job (never the key)."
        ),
    )
    attempts = models.PositiveIntegerField(_("attempts"), default=0)
    retries = models.PositiveIntegerField(
        _("retries"),
        default=0,
        help_text=_("Times the task asked to run again (Celery's self.retry())."),
    )
    recoveries = models.PositiveIntegerField(
        _("recoveries"),
        default=0,
        help_text=_("Times the recovery sweep resubmitted the job that gearmand had lost."),
    )
    execution = models.CharField(
        _("execution"),
        max_length=32,
        blank=True,
        help_text=_("The id of the run that holds the job's claim (fenced execution)."),
    )
    lease_until = models.DateTimeField(
        _("lease until"),
        null=True,
        blank=True,
        help_text=_(
            "Until when the running claim holds unless renewed; past it, another copy "
            "of the job may run."
        ),
    )
    worker_host = models.CharField(_("worker host"), max_length=255, blank=True)
    worker_pid = models.PositiveIntegerField(_("worker pid"), null=True, blank=True)
    created_at = models.DateTimeField(_("created at"), default=timezone.now)
    scheduled_for = models.DateTimeField(
        _("scheduled for"),
        null=True,
        blank=True,
        help_text=_("When the job is to run (run_at/delay); gearmand holds it until then."),
    )
    started_at = models.DateTimeField(_("started at"), null=True, blank=True)
    finished_at = models.DateTimeField(_("finished at"), null=True, blank=True)
    cancel_requested_at = models.DateTimeField(
        _("cancel requested at"),
        null=True,
        blank=True,
        help_text=_("When someone cancelled the job while it ran; its worker stops it."),
    )
    # -- the key's runs (docs/attach.rst, "Key policies") ----------------------------------
    run_number = models.PositiveIntegerField(
        _("run number"),
        default=1,
        help_text=_(
            "The number of the key's current run: each rerun, refresh, follow-up or "
            "replacement counts one more."
        ),
    )
    run_reason = models.CharField(
        _("run reason"), max_length=16, choices=RunReason.choices, default=RunReason.SUBMIT
    )
    on_conflict = models.CharField(
        _("on conflict"),
        max_length=16,
        choices=OnConflict.choices,
        default=OnConflict.JOIN,
        help_text=_("The key policy the current run was submitted under."),
    )
    next_reason = models.CharField(
        _("next run"),
        max_length=16,
        blank=True,
        choices=[
            (OnConflict.FOLLOW_UP.value, _("Follow-up")),
            (OnConflict.REPLACE.value, _("Replace")),
        ],
        help_text=_(
            "A run waits to start when the current one ends: a follow-up, or a "
            "replacement (latest wins). Empty: none."
        ),
    )
    next_arguments = models.JSONField(
        _("next arguments"),
        null=True,
        blank=True,
        help_text=_("The arguments of the run that waits."),
    )
    previous_result = models.JSONField(
        _("previous result"),
        null=True,
        blank=True,
        help_text=_(
            "The result of the key's last complete run before the current one "
            "(served while a stale outcome is refreshed)."
        ),
    )
    previous_finished_at = models.DateTimeField(_("previous finished at"), null=True, blank=True)
    previous_run_number = models.PositiveIntegerField(
        _("previous run number"),
        null=True,
        blank=True,
        help_text=_("The number of the run that previous_result is of."),
    )
    # -- the stream of the current run (docs/streaming.rst, django_gearattach.streams) ----
    stream_run = models.PositiveIntegerField(
        _("stream run"),
        default=0,
        help_text=_("Counts the runs workers started: the run of the stream's chunks."),
    )
    stream_seq = models.PositiveIntegerField(
        _("stream length"),
        default=0,
        help_text=_("The number of the last chunk of the current run's stream kept here."),
    )

    objects = JobQuerySet.as_manager()

    class Meta:
        verbose_name = _("job")
        verbose_name_plural = _("jobs")
        constraints = [
            models.UniqueConstraint(fields=["function", "key"], name="gearattach_job_function_key")
        ]
        indexes = [
            models.Index(fields=["status", "-created_at"], name="gearattach_status_created"),
            models.Index(fields=["function", "-created_at"], name="gearattach_function_created"),
            models.Index(fields=["-created_at"], name="gearattach_created"),
            models.Index(fields=["server", "status"], name="gearattach_server_status"),
            # Lookups by key alone: admin search, Celery's AsyncResult(id), get_result(id).
            models.Index(fields=["key"], name="gearattach_key"),
            # Scheduled jobs by time: the admin filter and the recovery sweep.
            models.Index(fields=["status", "scheduled_for"], name="gearattach_status_scheduled"),
            # The admin dashboard's periods: jobs finished in the last hour or day.
            models.Index(fields=["finished_at"], name="gearattach_finished"),
        ]
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.function}[{self.key}] {self.status}"

    @property
    def has_successor(self) -> bool:
        """Whether a run waits to start when the current one ends (a follow-up, or a
        replacement: see :mod:`~django_gearattach.policies`)."""
        return bool(self.next_reason)

    @property
    def is_finished(self) -> bool:
        return self.status in FINISHED

    @property
    def failure_text(self) -> str:
        """What the attachers of a job that did not complete are told: its error, or
        what became of it (``the job was cancelled``, ``the job was lost``)."""
        return self.error or f"the job was {self.status}"

    @property
    def is_active(self) -> bool:
        return self.status in ACTIVE

    def belongs_to(self, user: Any, session_key: str | None = None) -> bool:
        """Whether ``user`` submitted the job, or (anonymous) the session ``session_key``."""
        if self.owner_id is not None:
            return bool(user is not None and user.is_authenticated and user.pk == self.owner_id)
        if not (self.session_hash and session_key):
            return False
        mine = keyed_hashes("session", session_key)
        return any(constant_time_compare(self.session_hash, h) for h in mine)

    @property
    def is_waiting(self) -> bool:
        """Scheduled or queued: not started yet."""
        return self.status in WAITING

    @property
    def progress(self) -> float | None:
        """Progress as a fraction in [0, 1], or None when the task never reported any."""
        if self.progress_denominator <= 0:
            return None
        return min(max(self.progress_numerator / self.progress_denominator, 0.0), 1.0)

    @property
    def duration(self) -> float | None:
        if self.started_at is None or self.finished_at is None:
            return None
        return (self.finished_at - self.started_at).total_seconds()

    def as_dict(self) -> dict[str, Any]:
        """The record as JSON-ready data (``manage.py gearattach status``, HTTP endpoints)."""

        def iso(value: Any) -> str | None:
            return value.isoformat() if value is not None else None

        return {
            "id": str(self.id),
            "function": self.function,
            "key": self.key,
            "status": self.status,
            "progress": {
                "numerator": self.progress_numerator,
                "denominator": self.progress_denominator,
            },
            "data": self.data,
            "result": self.result,
            "error": self.error,
            "server": self.server,
            "handle": self.handle,
            "attempts": self.attempts,
            "retries": self.retries,
            "worker": {"host": self.worker_host, "pid": self.worker_pid},
            "created_at": iso(self.created_at),
            "scheduled_for": iso(self.scheduled_for),
            "started_at": iso(self.started_at),
            "finished_at": iso(self.finished_at),
        }


class JobChunk(models.Model):
    """One chunk of a job's stream (:mod:`~django_gearattach.streams`): written by the
    worker in batches, deleted with its record. Only the chunks of the record's current
    run (``Job.stream_run``) are read; a new run deletes the older ones with its first
    batch."""

    job = models.ForeignKey(
        Job, on_delete=models.CASCADE, related_name="chunks", verbose_name=_("job")
    )
    run = models.PositiveIntegerField(_("run"))
    seq = models.PositiveIntegerField(_("sequence number"))
    data = models.TextField(_("data"), help_text=_("The chunk as JSON text."))

    class Meta:
        verbose_name = _("stream chunk")
        verbose_name_plural = _("stream chunks")
        constraints = [
            models.UniqueConstraint(
                fields=["job", "run", "seq"], name="gearattach_chunk_job_run_seq"
            )
        ]

    def __str__(self) -> str:
        return f"{self.job_id} {self.run}:{self.seq}"


class Throttle(models.Model):
    """Shared state of a function's rate or concurrency limit (:mod:`.ratelimits`).

    ``slot`` -1 is the rate row: ``until`` is the time (epoch seconds) before which
    the next start may not be claimed (GCRA's theoretical arrival time). Slots 0 to
    N-1 are the concurrency leases: ``holder`` ("host:pid") holds one while it may
    run the function, until ``until`` unless renewed.
    """

    RATE = -1

    function = models.CharField(max_length=255)
    slot = models.IntegerField()
    holder = models.CharField(max_length=300, blank=True)
    until = models.FloatField(default=0.0)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["function", "slot"], name="gearattach_throttle_function_slot"
            )
        ]

    def __str__(self) -> str:
        return f"{self.function} slot {self.slot}"
