"""``operations``: retry a finished job, cancel a waiting one, against real gearmand."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone

from django_gearattach import signals, submit
from django_gearattach.capture import sign, verify
from django_gearattach.clients import get_client
from django_gearattach.exceptions import BadPayload
from django_gearattach.gearman.protocol import Command
from django_gearattach.gearman.routing import Address
from django_gearattach.models import Job, Status
from django_gearattach.operations import CANCELLED_ERROR, Cancel, cancel, retry
from django_gearattach.sealing import session_hash
from django_gearattach.testing import free_port
from django_gearattach.wire import OFFLOAD_FUNCTION

from .rawgearman import RawWorker

pytestmark = pytest.mark.django_db(transaction=True)

VIEW = "tests.testapp.views.report"
REQUEST: dict[str, Any] = {"method": "POST", "path": "/report/", "post": {"year": ["2026"]}}


def known(address: str, key: str) -> bool:
    return get_client().status_unique(Address.parse(address), key.encode()).known


def finished(key: str = "done-1", **fields: Any) -> Job:
    values: dict[str, Any] = {
        "function": "tests.add",
        "status": Status.COMPLETE,
        "arguments": {"args": [20, 22], "kwargs": {}},
        "result": 42,
        "finished_at": timezone.now(),
    }
    values.update(fields)
    return Job.objects.create(key=key, **values)


# -- cancel ------------------------------------------------------------------------------


def test_cancel_marks_a_queued_job_and_removes_it_from_gearmand(gearmand):
    job = submit("tests.add", [1, 2])
    outcome = cancel(job)
    assert outcome.verdict is Cancel.CANCELLED
    assert outcome.note == f"gearmand {gearmand.address}: OK"
    record = Job.objects.get(pk=job.pk)
    assert (record.status, record.error) == (Status.CANCELLED, CANCELLED_ERROR)
    assert record.finished_at is not None
    # The instance passed in says the same as the record.
    assert (job.status, job.error, job.finished_at) == (
        record.status,
        record.error,
        record.finished_at,
    )
    # gearmand marked the job ignored: the next worker to ask gets none and it is freed.
    worker = RawWorker(Address.parse(gearmand.address), "tests.add")
    try:
        assert worker.grab_once().command is Command.NO_JOB
    finally:
        worker.close()
    assert not known(gearmand.address, job.key)


def test_cancel_of_a_scheduled_job(gearmand):
    job = submit("tests.add", [1, 2], run_at=timezone.now() + timedelta(hours=1))
    assert job.status == Status.SCHEDULED
    outcome = cancel(job)
    assert outcome.verdict is Cancel.CANCELLED
    assert outcome.note.startswith(f"gearmand {gearmand.address}: ")
    assert Job.objects.get(pk=job.pk).status == Status.CANCELLED


def test_cancel_of_a_running_job_asks_its_worker_and_leaves_the_record_running():
    job = Job.objects.create(function="tests.add", key="run-1", status=Status.RUNNING)
    assert cancel(job).verdict is Cancel.REQUESTED  # gearmand is not asked: the worker is
    record = Job.objects.get(pk=job.pk)
    assert (record.status, record.error, record.finished_at) == (Status.RUNNING, "", None)
    assert record.cancel_requested_at is not None


@pytest.mark.parametrize("status", [Status.COMPLETE, Status.FAILED, Status.LOST, Status.CANCELLED])
def test_cancel_of_a_finished_job_changes_nothing(status):
    job = finished(status=status, error="ValueError: x" if status == Status.FAILED else "")
    before = Job.objects.filter(pk=job.pk).values().get()
    outcome = cancel(job)
    assert (outcome.verdict, outcome.note) == (Cancel.FINISHED, "")
    assert Job.objects.filter(pk=job.pk).values().get() == before


def test_cancel_reads_the_record_not_a_stale_instance(gearmand):
    job = submit("tests.add", [1, 2])
    Job.objects.filter(pk=job.pk).update(status=Status.RUNNING)
    assert job.status == Status.QUEUED  # the instance is stale
    assert cancel(job).verdict is Cancel.REQUESTED  # the record said running


def test_cancelling_twice_says_the_job_has_finished(gearmand):
    job = submit("tests.add", [1, 2])
    assert cancel(job).verdict is Cancel.CANCELLED
    assert cancel(job).verdict is Cancel.FINISHED
    assert Job.objects.get(pk=job.pk).error == CANCELLED_ERROR


def test_cancel_with_gearmand_down_cancels_the_record_and_says_gearmand_was_not_told(gearmand):
    job = submit("tests.add", [1, 2])
    gearmand.stop()
    outcome = cancel(job)
    assert outcome.verdict is Cancel.CANCELLED
    assert outcome.note.startswith(f"gearmand {gearmand.address} was not told (")
    assert outcome.note.endswith("); a worker will refuse the job")
    assert Job.objects.get(pk=job.pk).status == Status.CANCELLED


def test_cancel_uses_the_configured_server_when_the_record_names_none_or_a_bad_one(gearmand):
    for server in ("", "not an address:port"):
        job = submit("tests.add", [1, 2])
        Job.objects.filter(pk=job.pk).update(server=server)
        job.server = server
        outcome = cancel(job)
        assert outcome.note == f"gearmand {gearmand.address}: OK"
        assert Job.objects.get(pk=job.pk).status == Status.CANCELLED


def test_cancel_of_a_job_gearmand_no_longer_holds_leaves_nothing_runnable(gearmand):
    job = submit("tests.add", [1, 2])
    gearmand.restart()  # no persistent queue: the job is gone
    assert not known(gearmand.address, job.key)
    outcome = cancel(job)
    assert outcome.verdict is Cancel.CANCELLED
    assert outcome.note == f"gearmand {gearmand.address}: OK"
    worker = RawWorker(Address.parse(gearmand.address), "tests.add")
    try:
        assert worker.grab_once().command is Command.NO_JOB
    finally:
        worker.close()


def test_cancel_sends_job_finished_once():
    received: list[Job] = []

    def receiver(sender: Any, job: Job, **kwargs: Any) -> None:
        received.append(job)

    signals.job_finished.connect(receiver)
    try:
        job = Job.objects.create(
            function="tests.add",
            key="q-1",
            status=Status.QUEUED,
            server=f"127.0.0.1:{free_port()}",
        )
        cancel(job)
        cancel(job)
    finally:
        signals.job_finished.disconnect(receiver)
    assert [(j.pk, j.status) for j in received] == [(job.pk, Status.CANCELLED)]


# -- retry -------------------------------------------------------------------------------


def test_retry_submits_the_same_arguments_under_a_new_key(gearmand):
    original = finished(priority="high")
    new = retry(original)
    assert new.pk != original.pk
    assert new.key != original.key
    assert len(new.key) == 32
    record = Job.objects.get(pk=new.pk)
    assert (record.function, record.status, record.priority) == (
        "tests.add",
        Status.QUEUED,
        "high",
    )
    assert record.arguments == {"args": [20, 22], "kwargs": {}}
    assert known(gearmand.address, new.key)
    # The original is left as it was.
    assert Job.objects.get(pk=original.pk).status == Status.COMPLETE


def test_retry_keeps_the_owner_and_the_session(gearmand):
    user = get_user_model().objects.create_user("ops-owner")
    owned = finished("owned", owner=user)
    assert Job.objects.get(pk=retry(owned).pk).owner_id == user.pk
    anonymous = finished("anon", session_hash=session_hash("session-abc"))
    new = retry(anonymous)
    assert new.session_hash == anonymous.session_hash
    record = Job.objects.get(pk=new.pk)
    assert record.session_hash == anonymous.session_hash
    assert record.belongs_to(None, "session-abc")


def test_retry_of_a_failed_or_lost_job(gearmand):
    for status in (Status.FAILED, Status.LOST, Status.CANCELLED):
        new = retry(finished(f"again-{status}", status=status))
        assert Job.objects.get(pk=new.pk).status == Status.QUEUED


def test_retry_refuses_a_job_whose_arguments_are_unknown():
    job = finished("lost-1", status=Status.LOST, arguments=None)
    with pytest.raises(ValueError, match=r"the arguments of tests\.add\[lost-1\] are unknown"):
        retry(job)
    assert Job.objects.count() == 1


def test_retry_with_no_reachable_server_fails_clearly(settings):
    from django_gearattach import SubmitFailed

    settings.GEARATTACH = {**settings.GEARATTACH, "SERVERS": [f"127.0.0.1:{free_port()}"]}
    with pytest.raises(SubmitFailed, match="is gearmand running"):
        retry(finished())


def offloaded(key: str, request: dict[str, Any], signature: Any) -> Job:
    kwargs = {"view": VIEW, "request": request, "signature": signature}
    return finished(key, function=OFFLOAD_FUNCTION, arguments={"args": [], "kwargs": kwargs})


def test_retry_of_an_offloaded_request_signs_it_for_the_new_key(gearmand):
    original = offloaded("off-1", REQUEST, sign(VIEW, REQUEST, "off-1"))
    new = retry(original)
    kwargs = Job.objects.get(pk=new.pk).arguments["kwargs"]
    assert (kwargs["view"], kwargs["request"]) == (VIEW, REQUEST)
    assert verify(VIEW, REQUEST, new.key, kwargs["signature"])
    assert not verify(VIEW, REQUEST, original.key, kwargs["signature"])


@pytest.mark.parametrize(
    ("request_", "signature", "message"),
    [
        (REQUEST, "forged", "was not signed by this site"),
        (REQUEST, None, "was not signed by this site"),
        (REQUEST, sign(VIEW, REQUEST, "another-key"), "was not signed by this site"),
        ("not a dict", "x", "arguments are malformed"),
        (
            {**REQUEST, "sensitive_removed": ["password"]},
            "x",
            "sensitive fields were removed",
        ),
    ],
)
def test_retry_of_an_offloaded_request_this_site_did_not_sign_is_refused(
    gearmand, request_, signature, message
):
    job = offloaded("off-2", request_, signature)
    with pytest.raises(BadPayload, match=message):
        retry(job)
    assert Job.objects.count() == 1


@pytest.mark.parametrize("status", [Status.SCHEDULED, Status.QUEUED, Status.RUNNING])
def test_retry_refuses_a_job_that_has_not_finished(status):
    job = Job.objects.create(
        function="tests.add", key=f"active-{status}", status=status, arguments={"args": [1, 2]}
    )
    with pytest.raises(ValueError, match=f"is still {status}"):
        retry(job)
    assert Job.objects.count() == 1
