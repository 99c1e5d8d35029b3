"""Which runs of a key a browser's token follows (tokens name one run: web/tokens.py).

A run that waited to follow the one before (a follow-up, a replacement) takes the
record over as that run's continuation: whoever followed the run before (its page, its
widget) follows it too. A restart of a finished key (``rerun=True``, an expired or a
stale outcome) is a new run: the tokens of the run before do not name it.
"""

from __future__ import annotations

import pytest

from django_gearattach.models import Job, Status
from django_gearattach.policies import OnConflict, RunReason
from django_gearattach.web.tokens import Identity, check_token, make_token, run_of

pytestmark = pytest.mark.django_db

FUNCTION = "tests.add"
VISITOR = Identity(user_id=None, session_key="s" * 32)


def _token_of(job: Job) -> str:
    return make_token(job.function, job.key, VISITOR, run=run_of(job))


def _names(token: str, job: Job) -> bool:
    job.refresh_from_db()
    return check_token(token, VISITOR).names(job)


@pytest.mark.parametrize("reason", [OnConflict.FOLLOW_UP, OnConflict.REPLACE])
def test_a_run_that_takes_over_from_the_one_before_keeps_its_tokens(reason):
    job = Job.objects.create(
        function=FUNCTION,
        key="handed-over",
        status=Status.RUNNING,
        arguments={"args": [1, 2], "kwargs": {}},
        next_reason=reason.value,
        next_arguments={"args": [3, 4], "kwargs": {}},
    )
    token = _token_of(job)
    handed = Job.objects.filter(pk=job.pk).start_successor(Status.COMPLETE, result=3)
    assert handed == 1
    assert _names(token, job)
    assert (job.run_number, job.status, job.arguments["args"]) == (2, Status.QUEUED, [3, 4])


@pytest.mark.parametrize("reason", [RunReason.RERUN, RunReason.EXPIRED, RunReason.REFRESH])
def test_a_restart_of_a_finished_key_is_a_new_run_that_its_old_tokens_do_not_name(reason):
    job = Job.objects.create(
        function=FUNCTION, key=f"restarted-{reason}", status=Status.COMPLETE, result=3
    )
    token = _token_of(job)
    assert _names(token, job)
    assert Job.objects.filter(pk=job.pk).restart(reason, Status.QUEUED) == 1
    assert not _names(token, job)
    assert (job.run_number, job.status) == (2, Status.QUEUED)
    assert _names(_token_of(job), job)  # the new run's own token does
