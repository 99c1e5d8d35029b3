"""Small helpers shared by the integration tests."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from django.db import close_old_connections, connection
from django.test.utils import CaptureQueriesContext

from django_gearattach import attach
from django_gearattach.attachment import JobEvent
from django_gearattach.clients import get_client
from django_gearattach.gearman.rendezvous import Address
from django_gearattach.models import Job
from django_gearattach.worker.loop import Worker


def wait_until(
    predicate: Callable[[], Any], timeout: float = 20.0, what: str = "condition"
) -> Any:
    """Return ``predicate()``'s first truthy value; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out after {timeout} s waiting for {what} (last value {value!r})"
            )
        time.sleep(0.02)


def wait_for_status(function: str, key: str, status: str, timeout: float = 20.0) -> Job:
    def check() -> Job | None:
        return Job.objects.filter(function=function, key=key, status=status).first()

    job: Job = wait_until(check, timeout, f"{function}[{key}] to be {status}")
    return job


def foreground_clients(address: str, key: str) -> int:
    return get_client().status_unique(Address.parse(address), key.encode()).clients


class AttachThread(threading.Thread):
    """Runs the sync ``attach`` in a thread and keeps every event it got."""

    def __init__(
        self, function: str, key: str, timeout: float = 30.0, after: str | int | None = None
    ) -> None:
        super().__init__(daemon=True)
        self.function, self.key, self.timeout, self.after = function, key, timeout, after
        self.events: list[JobEvent] = []
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            for event in attach(self.function, self.key, timeout=self.timeout, after=self.after):
                self.events.append(event)
        except BaseException as exc:
            self.error = exc
        finally:
            close_old_connections()

    def result(self) -> list[JobEvent]:
        self.join(self.timeout + 5)
        assert not self.is_alive(), "attach did not finish"
        if self.error is not None:
            raise self.error
        return self.events


@contextmanager
def thread_worker(
    worker: Worker, jobs: int | None = 1, queries: list[str] | None = None
) -> Iterator[Worker]:
    """Run a real :class:`Worker` in a thread of this process for ``jobs`` jobs.

    Unlike a ``gearworker`` subprocess, its signals reach receivers connected here,
    and ``queries`` (when given) receives the SQL it ran. With ``jobs=None`` it runs
    until the block ends (or until something calls ``worker.stop()``). An exception
    in the worker thread is raised here.
    """
    errors: list[BaseException] = []

    def run() -> None:
        try:
            with CaptureQueriesContext(connection) as captured:
                worker.run(max_jobs=jobs)
            if queries is not None:
                queries.extend(q["sql"] for q in captured.captured_queries)
        except BaseException as exc:
            errors.append(exc)
        finally:
            close_old_connections()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield worker
    finally:
        if jobs is None:
            worker.stop()
        thread.join(30)
        worker.stop()
        thread.join(5)
        assert not thread.is_alive()
    if errors:
        raise errors[0]


def key_homed_on(address: str, prefix: str = "homed", function: str = "tests.record") -> str:
    """A key whose home server (rendezvous hashing) is ``address``."""
    from django_gearattach.clients import servers_for

    n = 0
    while str(servers_for(function, f"{prefix}-{n}")[0]) != address:
        n += 1
    return f"{prefix}-{n}"


def second_copy(address: str, function: str, key: str) -> None:
    """A second copy of a job on the gearmand at ``address``: a background attach marker,
    as an attacher that revives a job (or the recovery sweep) sends."""
    from django_gearattach.payload import ATTACH_MARKER

    get_client().submit_background(
        Address.parse(address), function, key.encode(), ATTACH_MARKER, "normal"
    )


def sse_events(text: str) -> list[dict[str, str]]:
    """The events of a Server-Sent Events body, parsed as ``EventSource`` does: each one's
    ``event`` (default "message"), ``id`` (if any) and ``data`` (its lines joined)."""
    events = []
    for block in text.replace("\r\n", "\n").split("\n\n"):
        fields: dict[str, list[str]] = {}
        for line in block.split("\n"):
            if not line or line.startswith(":"):
                continue
            name, _, value = line.partition(":")
            fields.setdefault(name, []).append(value[1:] if value.startswith(" ") else value)
        if "data" in fields:
            event = {
                "event": fields.get("event", ["message"])[-1],
                "data": "\n".join(fields["data"]),
            }
            if "id" in fields:
                event["id"] = fields["id"][-1]
            events.append(event)
    return events


def sse_messages(text: str) -> list[dict[str, Any]]:
    """The JSON messages of an SSE body (every event but ``end``, which closes it)."""
    return [json.loads(e["data"]) for e in sse_events(text) if e["event"] != "end"]


def one_by_one(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Websocket messages with each ``chunks`` frame opened into its ``chunk`` messages."""
    out: list[dict[str, Any]] = []
    for message in messages:
        out.extend(message["chunks"] if message.get("type") == "chunks" else [message])
    return out
