"""The app's exceptions; each message says what to do next."""

from __future__ import annotations


class GearattachError(Exception):
    """Base class of the app's errors."""


class InvalidKey(GearattachError, ValueError):
    """A job key that gearmand would refuse, truncate or misread."""


class BadPayload(GearattachError, ValueError):
    """Job arguments or a result that are not the JSON this app speaks."""


class UnknownTask(GearattachError, LookupError):
    """No task is registered under a Gearman function name."""


class JobNotFound(GearattachError, LookupError):
    """No record and no gearmand job exist for a (function, key)."""

    def __init__(self, function: str, key: str) -> None:
        super().__init__(
            f"no job {function!r} with key {key!r}: it was never submitted, or its record was "
            "deleted. Check the function name and the key."
        )
        self.function = function
        self.key = key


class SubmitFailed(GearattachError):
    """No configured gearmand accepted the job; the record is marked failed."""


class AttachTimeout(GearattachError, TimeoutError):
    """The job did not finish within the attach timeout.

    Leaving never harms the job: a running one keeps running, a queued one stays
    queued. The message says which.
    """


class NoWorker(AttachTimeout):
    """The attach timeout passed while no worker registers the job's function.

    The job never started and waits in gearmand until a worker for its function
    starts: a worker that is not running, or a misspelt function name. A subclass of
    :class:`AttachTimeout`, so ``except AttachTimeout`` catches it too.
    """


class OffloadRefused(GearattachError):
    """A worker will not run (or keep the outcome of) an offloaded request.

    Its user is inactive or signed out since, or a shared view answered with an error.
    """


class InvalidSchedule(GearattachError, ValueError):
    """A ``run_at`` or ``delay`` that does not name one moment (naive, negative...)."""


class JobCancelled(GearattachError):
    """Raised inside a running task by ``progress()``/``data()`` once its job is cancelled.

    Catch it to clean up; the job ends ``cancelled`` however the task then ends by
    raising (see :mod:`django_gearattach.cancelling`).
    """


class ClaimLost(GearattachError):
    """This run of a job no longer holds its claim on the record.

    Its lease expired (its process was paused, or lost the database, for longer than
    ``GEARATTACH["LEASE"]``) and another copy of the job took the record over: the run
    may not write or report anything more, and its retry is refused. Raised inside the
    task by a retry; the worker then gives the job the outcome of the run that holds
    the claim.
    """
