"""``manage.py gearattach prune``: old finished records go, in batches; active ones stay."""

from __future__ import annotations

from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from django_gearattach.housekeeping import parse_age
from django_gearattach.models import Job, Status

pytestmark = pytest.mark.django_db


def make(status: str, days_old: float, key: str) -> Job:
    return Job.objects.create(
        function="tests.add",
        key=key,
        status=status,
        created_at=timezone.now() - timedelta(days=days_old),
    )


@pytest.fixture
def jobs() -> dict[str, Job]:
    return {
        "old-complete": make(Status.COMPLETE, 40, "old-complete"),
        "old-failed": make(Status.FAILED, 31, "old-failed"),
        "old-cancelled": make(Status.CANCELLED, 90, "old-cancelled"),
        "old-lost": make(Status.LOST, 35, "old-lost"),
        "old-queued": make(Status.QUEUED, 60, "old-queued"),
        "old-running": make(Status.RUNNING, 60, "old-running"),
        "new-complete": make(Status.COMPLETE, 29, "new-complete"),
    }


def prune(*args: str) -> str:
    out = StringIO()
    call_command("gearattach", "prune", *args, stdout=out)
    return out.getvalue().strip()


def remaining() -> set[str]:
    return set(Job.objects.values_list("key", flat=True))


def test_deletes_finished_records_older_than_the_age(jobs):
    assert prune("--older-than", "30d") == "Deleted 4 records."
    assert remaining() == {"old-queued", "old-running", "new-complete"}


def test_status_narrows_what_is_deleted(jobs):
    assert prune("--older-than", "30d", "--status", "complete") == "Deleted 1 records."
    assert "old-complete" not in remaining()
    assert prune("--older-than", "30d", "--status", "failed", "--status", "lost") == (
        "Deleted 2 records."
    )
    assert remaining() == {"old-cancelled", "old-queued", "old-running", "new-complete"}


def test_dry_run_counts_and_deletes_nothing(jobs):
    assert prune("--older-than", "30d", "--dry-run") == "4 records would be deleted."
    assert len(remaining()) == 7


def test_deletes_in_batches(jobs):
    with CaptureQueriesContext(connection) as queries:
        assert prune("--older-than", "30d", "--batch-size", "3") == "Deleted 4 records."
    deletes = [q["sql"] for q in queries if q["sql"].startswith("DELETE")]
    # 3 + 1 records; each batch's stream chunks go with it, in one statement.
    assert sum('gearattach_job"' in sql.split(" WHERE")[0] for sql in deletes) == 2
    assert sum("gearattach_jobchunk" in sql.split(" WHERE")[0] for sql in deletes) == 2
    assert remaining() == {"old-queued", "old-running", "new-complete"}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--older-than", "30 days"], "is not an age"),
        (["--older-than", "30d", "--status", "running"], "invalid choice: 'running'"),
        (["--older-than", "30d", "--batch-size", "0"], "must be at least 1"),
        ([], "the following arguments are required: --older-than"),
    ],
)
def test_bad_arguments_are_refused(jobs, args, message):
    with pytest.raises(CommandError, match=message):
        prune(*args)
    assert len(remaining()) == 7


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("45s", 45),
        ("90m", 5400),
        ("12h", 43200),
        ("30d", 2592000),
        ("2w", 1209600),
        ("7D", 604800),
    ],
)
def test_ages(text, seconds):
    assert parse_age(text) == timedelta(seconds=seconds)
