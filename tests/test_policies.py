"""Key policies as values: options, their checks and defaults, what is fresh and stale."""

from __future__ import annotations

import math
from datetime import timedelta

import pytest
from django.utils import timezone

from django_gearattach import submit, task
from django_gearattach.models import Job, Status
from django_gearattach.policies import DEFAULT, InvalidPolicy, KeyPolicy, OnConflict
from django_gearattach.tasks import policy_of


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"on_conflict": "coalesce"}, "on_conflict must be one of 'join', 'follow_up', 'replace'"),
        ({"max_age": -1}, "max_age must be"),
        ({"max_age": "600"}, "max_age must be"),
        ({"max_age": True}, "max_age must be"),
        ({"stale_while_revalidate": -5, "max_age": 1}, "stale_while_revalidate must be"),
        ({"stale_while_revalidate": 60}, "stale_while_revalidate needs a max_age"),
        ({"stale_while_revalidate": math.inf, "max_age": 1}, "finite"),
    ],
)
def test_bad_options_are_refused_with_what_to_write_instead(options, message):
    with pytest.raises(InvalidPolicy, match=message):
        KeyPolicy.of(**options)


def test_a_task_with_a_bad_policy_fails_where_it_is_defined():
    with pytest.raises(InvalidPolicy, match="on_conflict must be one of"):

        @task(name="tests.bad_policy", on_conflict="latest")
        def bad() -> None: ...


def test_each_on_conflict_has_its_own_default_max_age():
    assert KeyPolicy.of().reuse_for == math.inf  # join: stored forever
    assert KeyPolicy.of(on_conflict="follow_up").reuse_for == 0
    assert KeyPolicy.of(on_conflict="replace").reuse_for == 0
    assert KeyPolicy.of(on_conflict="replace", max_age=5).reuse_for == 5


def test_a_submit_overrides_the_tasks_policy_option_by_option():
    @task(name="tests.policied", max_age=600, stale_while_revalidate=60)
    def policied() -> None: ...

    assert policied.policy == KeyPolicy(OnConflict.JOIN, 600.0, 60.0)
    assert policy_of(policied, "k") == policied.policy
    assert policy_of("tests.policied", "k", max_age=10) == KeyPolicy(OnConflict.JOIN, 10.0, 60.0)
    assert policy_of(policied, "k", on_conflict="follow_up").on_conflict == OnConflict.FOLLOW_UP
    assert policy_of("tests.unregistered", "k") == DEFAULT
    # math.inf is "forever", and then there is nothing to revalidate.
    with pytest.raises(InvalidPolicy, match="needs a max_age"):
        policy_of(policied, "k", max_age=math.inf)
    assert policy_of(policied, "k", max_age=math.inf, stale_while_revalidate=0).max_age is None


@pytest.mark.django_db
def test_policy_options_without_a_key_are_refused_before_anything_is_recorded():
    with pytest.raises(InvalidPolicy, match="apply to a key: pass key="):
        submit("tests.add", [1, 2], max_age=60)
    assert not Job.objects.exists()


def _finished(status: str, seconds_ago: float, **fields: object) -> Job:
    at = timezone.now() - timedelta(seconds=seconds_ago)
    return Job(status=status, finished_at=at, result={"v": 1}, **fields)


def test_fresh_means_complete_and_young_enough_under_a_max_age():
    now = timezone.now()
    policy = KeyPolicy.of(max_age=60)
    assert policy.fresh(_finished(Status.COMPLETE, 59), now)
    assert not policy.fresh(_finished(Status.COMPLETE, 61), now)
    assert not policy.fresh(_finished(Status.FAILED, 1), now)  # a failure runs again
    assert DEFAULT.fresh(_finished(Status.FAILED, 10**6), now)  # join: kept forever


def test_stale_is_the_last_complete_result_within_the_window():
    policy = KeyPolicy.of(max_age=60, stale_while_revalidate=30)
    stale = policy.stale(_finished(Status.COMPLETE, 80))
    assert stale is not None
    assert stale.result == {"v": 1}
    assert 79 < stale.age() < 81
    assert policy.stale(_finished(Status.COMPLETE, 91)) is None
    # While the refresh runs, the result kept from before it answers.
    refreshing = Job(
        status=Status.RUNNING,
        previous_result={"v": 0},
        previous_finished_at=timezone.now() - timedelta(seconds=70),
    )
    assert policy.stale(refreshing).result == {"v": 0}
    assert KeyPolicy.of(max_age=60).stale(refreshing) is None  # no revalidation asked for
