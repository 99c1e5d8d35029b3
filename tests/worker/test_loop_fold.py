"""One commit per job on PostgreSQL: the outcome of a job and the running mark of the next.

Before it reports a job, the worker grabs its next one and writes both records in
one statement (worker.py, ``_conclude``). On SQLite it writes them separately. These
tests run a real :class:`~django_gearattach.worker.loop.Worker` in a thread of this
process, on a real gearmand, so its statements and state can be counted.
"""

from __future__ import annotations

import pytest
from django.db import DatabaseError, OperationalError, connection

import tests.testapp.tasks  # noqa: F401  (registers the tasks the thread worker runs)
from django_gearattach import records, submit
from django_gearattach.clients import get_client
from django_gearattach.conf import conf
from django_gearattach.gearman.errors import ConnectionFailed
from django_gearattach.models import Job, Status
from django_gearattach.payload import encode_arguments
from django_gearattach.signals import job_finished
from django_gearattach.tasks import get_task
from django_gearattach.worker import claim
from django_gearattach.worker.loop import Worker
from tests.helpers import thread_worker, wait_until

pytestmark = pytest.mark.django_db(transaction=True)

FOLDS = connection.vendor == "postgresql"


def test_combines_updates_only_where_it_saves_a_round_trip():
    assert records.combines_updates() is FOLDS


def test_update_together_returns_each_row_count_in_one_statement_on_postgresql(
    django_assert_num_queries,
):
    first = Job.objects.create(function="tests.add", key="together-1", status=Status.RUNNING)
    with django_assert_num_queries(1 if FOLDS else 4):  # SQLite: BEGIN, UPDATE, UPDATE, COMMIT
        counts = records.update_together(
            records.Update("tests.add", "together-1", {"status": Status.COMPLETE, "result": 2}),
            records.Update("tests.add", "no-such-key", {"status": Status.RUNNING}),
        )
    assert counts == [1, 0]
    first.refresh_from_db()
    assert (first.status, first.result) == (Status.COMPLETE, 2)


def test_each_job_costs_one_statement_when_the_next_is_waiting(gearmand):
    jobs = [submit("tests.add", [n, n]) for n in range(6)]  # queued before the worker starts
    worker = Worker([get_task("tests.add")], conf.SERVERS)
    queries: list[str] = []
    with thread_worker(worker, len(jobs), queries):
        wait_until(
            lambda: Job.objects.filter(status=Status.COMPLETE).count() == len(jobs),
            what="all six jobs to complete",
        )
    updates = [q for q in queries if q.lstrip().upper().startswith(("UPDATE", "WITH"))]
    if FOLDS:
        # The first job's running mark, then one statement per job: its outcome with the
        # next job's running mark (the last job grabs nothing ahead: max_jobs).
        assert (worker.jobs_folded, len(updates)) == (5, 7)
    else:
        assert (worker.jobs_folded, len(updates)) == (0, 12)
    for job in jobs:
        job.refresh_from_db()
        assert (job.status, job.attempts) == (Status.COMPLETE, 1)
        assert job.result == job.arguments["args"][0] * 2
        assert job.started_at <= job.finished_at
        assert job.worker_pid is not None
        assert job.handle


def test_a_job_grabbed_ahead_still_runs_when_the_worker_is_stopped(gearmand):
    for n in range(3):
        submit("tests.add", [n, 1])
    worker = Worker([get_task("tests.add")], conf.SERVERS)
    stop_after_first = lambda sender, job, **kwargs: worker.stop()  # noqa: E731
    job_finished.connect(stop_after_first, weak=False)
    try:
        with thread_worker(worker, None):
            # It stops itself after its first job, and runs the one it holds, if any.
            wait_until(lambda: worker.jobs_done == (2 if FOLDS else 1), what="the worker")
    finally:
        job_finished.disconnect(stop_after_first)
    statuses = sorted(Job.objects.values_list("status", "attempts"))
    if FOLDS:
        # The second job was grabbed and marked running with the first one's outcome:
        # it is run, not left running in the record and requeued in gearmand.
        assert statuses == [("complete", 1), ("complete", 1), ("queued", 0)]
    else:
        assert statuses == [("complete", 1), ("queued", 0), ("queued", 0)]
    for job in Job.objects.filter(status=Status.COMPLETE):
        assert job.result == job.arguments["args"][0] + 1


def test_a_job_without_a_record_grabbed_ahead_is_recorded_as_it_starts(gearmand):
    """Jobs from other clients (pygearman, the gearman CLI) have no record to mark."""
    client = get_client()
    (address,) = conf.SERVERS
    keys = [f"foreign-{n}" for n in range(3)]
    for n, key in enumerate(keys):
        client.submit_background(address, "tests.add", key.encode(), encode_arguments([n, 0], {}))
    worker = Worker([get_task("tests.add")], conf.SERVERS)
    with thread_worker(worker, len(keys), []):
        wait_until(
            lambda: Job.objects.filter(status=Status.COMPLETE).count() == len(keys),
            what="the foreign jobs to complete",
        )
    assert worker.jobs_folded == 0  # nothing to mark ahead: each record is created at start
    assert sorted(Job.objects.values_list("key", "result", "attempts")) == [
        (key, n, 1) for n, key in enumerate(keys)
    ]


def _run_two_jobs(gearmand) -> list[Job]:
    jobs = [submit("tests.add", [n, 10]) for n in range(2)]
    worker = Worker([get_task("tests.add")], conf.SERVERS)
    with thread_worker(worker, None):
        wait_until(
            lambda: Job.objects.filter(status=Status.COMPLETE).count() == 2,
            what="both jobs to complete",
        )
    return [Job.objects.get(pk=job.pk) for job in jobs]


def test_a_connection_lost_after_the_fold_requeues_both_and_counts_no_extra_attempt(
    gearmand, monkeypatch
):
    """The job held ahead was marked running but never ran: its mark is undone."""
    send_final = Worker._send_final
    failed: list[bytes] = []

    def lose_the_connection_once(self, job, command, *args, **kwargs):
        if not failed:
            failed.append(job.unique)
            job.connection.close()
            raise ConnectionFailed(str(job.server), "lost (test)")
        send_final(self, job, command, *args, **kwargs)

    monkeypatch.setattr(Worker, "_send_final", lose_the_connection_once)
    jobs = _run_two_jobs(gearmand)
    assert failed  # the first report was lost; its outcome was committed before it
    for job in jobs:
        assert (job.status, job.attempts, job.result) == (
            "complete",
            1,
            job.arguments["args"][0] + 10,
        )


def test_a_database_error_writing_an_outcome_requeues_the_job_and_the_one_held_ahead(
    gearmand, monkeypatch
):
    """An error that outlasts the worker's patience: nothing is lost, the job whose
    outcome was not written runs again."""
    monkeypatch.setattr(claim, "OUTCOME_PATIENCE", 0.0)
    failed: list[str] = []
    if FOLDS:
        update_together = records.update_together

        def fail_the_fold_once(*specs):
            if len(specs) == 2 and not failed:
                failed.append(specs[0].key)
                raise DatabaseError("the database went away (test)")
            return update_together(*specs)

        monkeypatch.setattr(records, "update_together", fail_the_fold_once)
    else:
        finish = Worker._finish

        def fail_the_outcome_once(self, claim, status, fields):
            if not failed:
                failed.append(claim.key)
                raise DatabaseError("the database went away (test)")
            return finish(self, claim, status, fields)

        monkeypatch.setattr(Worker, "_finish", fail_the_outcome_once)
    jobs = _run_two_jobs(gearmand)
    assert len(failed) == 1
    for job in jobs:
        assert (job.status, job.result) == ("complete", job.arguments["args"][0] + 10)
        assert job.attempts == (2 if job.key == failed[0] else 1)


def test_a_brief_database_outage_while_writing_an_outcome_runs_nothing_twice(
    gearmand, monkeypatch, caplog
):
    """The worker holds the finished run and writes its outcome once the database
    answers again, rather than dropping the job for gearmand to run a second time."""
    refused: list[str] = []
    name = "update_together" if FOLDS else "update"
    write = getattr(records, name)

    def writes_an_outcome(args) -> bool:
        fields = args[0].fields if FOLDS else args[2]
        return bool(fields.get("status") == Status.COMPLETE)

    def refuse_twice(*args, **kwargs):
        if len(refused) < 2 and writes_an_outcome(args):
            refused.append("refused")
            raise OperationalError("connection refused (test)")
        return write(*args, **kwargs)

    monkeypatch.setattr(records, name, refuse_twice)
    with caplog.at_level("WARNING", logger="django_gearattach.worker.loop"):
        jobs = _run_two_jobs(gearmand)
    assert refused == ["refused", "refused"]
    held = [r.getMessage() for r in caplog.records if "outcome is not written yet" in r.message]
    assert len(held) == 2  # both refusals hit an outcome write, which was held, not dropped
    for job in jobs:
        assert (job.status, job.attempts, job.result) == (
            "complete",
            1,
            job.arguments["args"][0] + 10,
        )
