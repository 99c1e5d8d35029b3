"""``AsyncResult`` and ``GroupResult`` (``celery.result``), read from job records.

Every attribute reads the record afresh. ``get()`` waits by attaching to the job (the
outcome is pushed by gearmand), never by polling a result backend.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import TYPE_CHECKING, Any

from ..exceptions import AttachTimeout, JobNotFound
from . import signals, states
from .exceptions import TimeoutError
from .outcome import custom, exception_of, find, message, state_of, tracks_started

if TYPE_CHECKING:
    from ..models import Job

#: How long ``get()`` waits for a chord body's record once its header succeeded (the
#: header job that submits it does so just after committing its own outcome).
LINK_WAIT = 10.0


_GET_REFUSED = ("callback", "on_interval", "EXCEPTION_STATES", "PROPAGATE_STATES")


class _Deadline:
    def __init__(self, timeout: float | None) -> None:
        self.at = None if timeout is None else time.monotonic() + timeout

    def left(self) -> float | None:
        if self.at is None:
            return None
        left = self.at - time.monotonic()
        if left <= 0:
            raise TimeoutError("The operation timed out.")
        return left


def _check_get_options(options: dict[str, Any], disable_sync_subtasks: bool) -> None:
    for name in _GET_REFUSED:
        if options.get(name) is not None:
            raise NotImplementedError(
                f"get({name}=...) is not supported: use on_message= for updates and "
                "propagate= for failures"
            )
    unknown = set(options) - set(_GET_REFUSED)
    if unknown:
        raise TypeError(f"get() got unexpected keyword arguments {sorted(unknown)}")
    if disable_sync_subtasks:
        from ..tasks import current_job

        if current_job() is not None:
            raise RuntimeError(
                "Never call result.get() within a task! It can deadlock the workers; chain "
                "the tasks instead (or pass disable_sync_subtasks=False)"
            )


class AsyncResult:
    """The state and outcome of a task id (the job key)."""

    def __init__(
        self,
        id: str,
        backend: Any = None,
        task_name: str | None = None,
        app: Any = None,
        parent: AsyncResult | GroupResult | None = None,
    ) -> None:
        self.id = id
        self.task_name = task_name
        self.parent = parent

    @property
    def task_id(self) -> str:
        return self.id

    def __repr__(self) -> str:
        return f"<AsyncResult: {self.id}>"

    def __str__(self) -> str:
        return self.id

    def __eq__(self, other: object) -> bool:
        if isinstance(other, AsyncResult):
            return self.id == other.id
        return other == self.id

    def __hash__(self) -> int:
        return hash(self.id)

    def _record(self) -> Job | None:
        from ..models import Job

        if self.task_name is not None:
            return Job.objects.for_key(self.task_name, self.id).first()
        record = find(self.id)
        if record is not None:
            self.task_name = record.function
        return record

    @property
    def known(self) -> bool:
        """Whether a job with this id exists (False: ``PENDING`` means "never heard of")."""
        return self._record() is not None

    @property
    def state(self) -> str:
        return state_of(self._record())

    status = state

    @property
    def result(self) -> Any:
        """The return value; the exception of a failure or retry; a custom state's meta;
        ``{"pid": ..., "hostname": ...}`` while started; None while pending."""
        record = self._record()
        state = state_of(record)
        if record is None or state == states.PENDING:
            return None
        if state == states.SUCCESS:
            return record.result
        if state in states.EXCEPTION_STATES:
            return exception_of(record)
        if state == states.STARTED:
            return {"pid": record.worker_pid, "hostname": record.worker_host}
        return custom(record)[1]

    info = result

    @property
    def traceback(self) -> str | None:
        record = self._record()
        return (record.traceback or None) if record is not None else None

    @property
    def date_done(self) -> datetime | None:
        record = self._record()
        return record.finished_at if record is not None else None

    @property
    def retries(self) -> int:
        record = self._record()
        return record.retries if record is not None else 0

    @property
    def name(self) -> str | None:
        if self.task_name is None:
            self._record()
        return self.task_name

    @property
    def children(self) -> None:
        return None

    def ready(self) -> bool:
        return self.state in states.READY_STATES

    def successful(self) -> bool:
        return self.state == states.SUCCESS

    def failed(self) -> bool:
        return self.state == states.FAILURE

    def get(
        self,
        timeout: float | None = None,
        propagate: bool = True,
        interval: float = 0.5,
        no_ack: bool = True,
        follow_parents: bool = True,
        on_message: Callable[[dict[str, Any]], Any] | None = None,
        disable_sync_subtasks: bool = True,
        **options: Any,
    ) -> Any:
        """Wait for the outcome (attached to the job: gearmand pushes it) and return it.

        ``on_message`` is called with the task's meta (``{"status", "result", ...}``) for
        each state the task reports (``update_state``) and for its outcome. A failure
        raises the task's own exception (``propagate``) or returns it. A chain's result
        first waits for its parents, and raises a parent's failure. Raises
        :class:`~django_gearattach.celery.exceptions.TimeoutError` after ``timeout``
        seconds (the task keeps running) and ``JobNotFound`` for an unknown id.
        ``interval`` and ``no_ack`` are accepted and have nothing to do: nothing polls.
        """
        _check_get_options(options, disable_sync_subtasks)
        deadline = _Deadline(timeout)
        record = self._record()
        if record is None and self.parent is not None and follow_parents:
            self.parent.get(timeout=deadline.left(), propagate=True, disable_sync_subtasks=False)
            record = self._wait_for_record(deadline)
        if record is None:
            raise JobNotFound(self.task_name or "?", self.id)
        if not record.is_finished:
            record = self._follow(record, deadline, on_message)
        if on_message is not None:
            on_message(message(record))
        if record.status == "complete":
            return record.result
        exc = exception_of(record)
        if propagate:
            raise exc
        return exc

    wait = get

    def _wait_for_record(self, deadline: _Deadline) -> Job | None:
        give_up = time.monotonic() + LINK_WAIT
        delay = 0.01
        while True:
            record = self._record()
            if record is not None or time.monotonic() > give_up:
                return record
            left = deadline.left()
            time.sleep(min(delay, left) if left is not None else delay)
            delay = min(delay * 2, 0.25)

    def _meta(self, state: str, result: Any) -> dict[str, Any]:
        return {
            "task_id": self.id,
            "status": state,
            "result": result,
            "traceback": None,
            "children": [],
            "date_done": None,
        }

    def _follow(
        self, record: Job, deadline: _Deadline, on_message: Callable[[dict[str, Any]], Any] | None
    ) -> Job:
        from ..attachment import attach

        tracked = on_message is not None and tracks_started(record.function)
        started = False  # whether on_message heard STARTED for this run

        def hear(state: str, meta: Any) -> None:
            nonlocal started
            assert on_message is not None
            # Any report means the job started; one that started before this waiter
            # joined never says so again (gearmand tells newcomers nothing), so a
            # waiter hears STARTED before the job's first report, as from Celery.
            if tracked and not started and state != states.STARTED:
                hear(states.STARTED, {"pid": None, "hostname": None})
            started = started or state == states.STARTED
            on_message(self._meta(state, meta))

        try:
            for event in attach(record, timeout=deadline.left()):
                if on_message is None:
                    continue
                data = event.data
                if event.event == "started" and tracked:
                    hear(states.STARTED, {"pid": None, "hostname": None})
                elif (
                    event.event == "data"
                    and isinstance(data, dict)
                    and set(data) == {"state", "meta"}
                ):
                    hear(data["state"], data["meta"])
        except TimeoutError:
            raise
        except AttachTimeout:
            raise TimeoutError("The operation timed out.") from None
        if tracked and not started:  # it started and ended with no report on the way
            hear(states.STARTED, {"pid": None, "hostname": None})
        fresh = self._record()
        assert fresh is not None
        return fresh

    def revoke(self, connection: Any = None, terminate: bool = False, **kwargs: Any) -> None:
        """Cancel the job if it is queued or scheduled; with ``terminate=True`` also a
        running one, which its worker stops (:mod:`django_gearattach.cancelling`)."""
        if kwargs.get("signal") is not None:
            raise NotImplementedError(
                "revoke(signal=...) is not supported: a running job is asked to stop, then "
                "its worker process is ended after GEARATTACH['CANCEL_GRACE'] seconds"
            )
        from ..operations import Cancel, cancel

        record = self._record()
        if record is None:
            return
        if not terminate and record.status == "running":
            return  # as in Celery: revoke() without terminate does not stop a running task
        verdict = cancel(record).verdict
        if verdict is not Cancel.FINISHED:
            signals.task_revoked.send(
                sender=self.task_name,
                request=None,
                terminated=verdict is Cancel.REQUESTED,
                signum=None,
                expired=False,
            )

    def forget(self) -> None:
        """Delete the record of a finished job."""
        record = self._record()
        if record is not None and record.is_finished:
            record.delete()

    def then(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError("AsyncResult.then() (promises) is not supported; use a chain")


class GroupResult:
    """The results of a group, in order; ``ready()``, ``completed_count()``, ``join()``."""

    def __init__(
        self, id: str | None = None, results: list[AsyncResult] | None = None, **kwargs: Any
    ) -> None:
        if kwargs.get("parent") is not None:
            raise NotImplementedError("GroupResult(parent=...) is not supported")
        self.id = id
        self.results = list(results or [])
        self.parent: AsyncResult | GroupResult | None = None

    def __repr__(self) -> str:
        return f"<GroupResult: {self.id} [{', '.join(r.id for r in self.results)}]>"

    def __iter__(self) -> Iterator[AsyncResult]:
        return iter(self.results)

    def __len__(self) -> int:
        return len(self.results)

    def __getitem__(self, index: int) -> AsyncResult:
        return self.results[index]

    @property
    def children(self) -> list[AsyncResult]:
        return self.results

    def ready(self) -> bool:
        return all(r.ready() for r in self.results)

    def successful(self) -> bool:
        return all(r.successful() for r in self.results)

    def failed(self) -> bool:
        return any(r.failed() for r in self.results)

    def waiting(self) -> bool:
        return not self.ready()

    def completed_count(self) -> int:
        """How many tasks succeeded."""
        return sum(1 for r in self.results if r.successful())

    def join(
        self, timeout: float | None = None, propagate: bool = True, **options: Any
    ) -> list[Any]:
        """Every task's outcome in order (waiting for each), raising the first failure."""
        deadline = _Deadline(timeout)
        return [
            r.get(timeout=deadline.left(), propagate=propagate, **options) for r in self.results
        ]

    get = join

    def revoke(self, **kwargs: Any) -> None:
        for result in self.results:
            result.revoke(**kwargs)

    def forget(self) -> None:
        for result in self.results:
            result.forget()

    def save(self, *args: Any, **kwargs: Any) -> None:
        raise NotImplementedError(
            "GroupResult.save() is not supported: keep the task ids (r.id for r in "
            "group_result) and rebuild it with GroupResult(id, [AsyncResult(i) for i in ids])"
        )

    @classmethod
    def restore(cls, id: str, *args: Any, **kwargs: Any) -> GroupResult:
        raise NotImplementedError(
            "GroupResult.restore() is not supported: groups are not stored; rebuild it "
            "from the task ids with GroupResult(id, [AsyncResult(i) for i in ids])"
        )


ResultSet = GroupResult

__all__ = ["AsyncResult", "GroupResult", "ResultSet", "exception_of", "state_of"]
