"""The Job admin: list, read-only page, actions against real gearmand, servers page."""

from __future__ import annotations

import json
import re
import time
from datetime import timedelta
from typing import Any
from urllib.parse import quote

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from django_gearattach import attach, submit
from django_gearattach.clients import get_client
from django_gearattach.gearman.connection import admin_command
from django_gearattach.gearman.rendezvous import Address
from django_gearattach.models import Job, Status
from django_gearattach.testing import free_port
from tests.conftest import executions
from tests.helpers import wait_for_status, wait_until

pytestmark = pytest.mark.django_db(transaction=True)

CHANGELIST = "admin:django_gearattach_job_changelist"
SERVERS = "admin:django_gearattach_job_servers"
User = get_user_model()


def change_url(job: Job) -> str:
    return reverse("admin:django_gearattach_job_change", args=[job.pk])


def make_job(key: str, status: str = Status.COMPLETE, **fields) -> Job:
    now = timezone.now()
    defaults = {
        "function": "tests.add",
        "arguments": {"args": [1, 2], "kwargs": {}},
        "server": "127.0.0.1:4730",
        "created_at": now - timedelta(seconds=10),
    }
    if status in (Status.COMPLETE, Status.FAILED, Status.RUNNING):
        defaults["started_at"] = now - timedelta(seconds=8)
    if status in (Status.COMPLETE, Status.FAILED):
        defaults["finished_at"] = now - timedelta(seconds=5)
    return Job.objects.create(key=key, status=status, **{**defaults, **fields})


def test_scheduled_column_filter_and_retries(admin_client):
    now = timezone.now()
    later = make_job("later", Status.SCHEDULED, scheduled_for=now + timedelta(hours=1))
    due = make_job("due", Status.SCHEDULED, scheduled_for=now - timedelta(seconds=5), retries=2)
    make_job("plain", Status.QUEUED)
    url = reverse(CHANGELIST)
    for value, keys in [("waiting", ["later"]), ("due", ["due"]), ("any", ["due", "later"])]:
        response = admin_client.get(f"{url}?scheduled={value}")
        assert sorted(j.key for j in response.context["cl"].result_list) == keys
    html = admin_client.get(url).content.decode()
    # The status column says when a scheduled job runs (the list has no room for a
    # column of its own at 1280 px: issue 21).
    assert f'datetime="{timezone.localtime(later.scheduled_for).isoformat()}"' in html
    assert "Scheduled" in html  # the status badge
    page = admin_client.get(change_url(due)).content.decode()
    assert "retries" in page.lower()
    assert later.pk != due.pk


def run_action(client, action: str, jobs: list[Job]):
    return client.post(
        reverse(CHANGELIST),
        {"action": action, "_selected_action": [str(j.pk) for j in jobs]},
        follow=True,
    )


def texts(response) -> list[str]:
    return [str(m) for m in response.context["messages"]]


# -- the list ----------------------------------------------------------------------------


def test_the_list_shows_each_column(admin_client, admin_user):
    make_job("k-done", owner=admin_user, progress_numerator=3, progress_denominator=4)
    make_job("k-failed", Status.FAILED, error="ValueError: no")
    html = admin_client.get(reverse(CHANGELIST)).content.decode()
    assert 'class="gearattach-badge" style="background:#176f2c">Complete<' in html
    assert 'class="gearattach-badge" style="background:#a40000">Failed<' in html
    assert '<progress class="gearattach-progress" value="3" max="4"' in html
    assert "75%" in html
    for column in ("function", "key_display", "status_badge", "progress_bar", "created_display"):
        assert f"column-{column}" in html
    assert 'title="k-done">k-done<' in html  # a long key is cut short; its tooltip has it
    assert "3.0 s" in html  # duration: started 8 s ago, finished 5 s ago
    assert reverse(SERVERS) in html  # the servers page is linked from the list


def _owners(prefix: str, count: int) -> list[Any]:
    User.objects.bulk_create(User(username=f"{prefix}{i}") for i in range(count))
    return list(User.objects.filter(username__startswith=prefix).order_by("pk"))


def test_the_list_costs_the_same_queries_for_3_rows_and_for_many(
    admin_client, django_assert_num_queries
):
    url = reverse(CHANGELIST)
    for i, owner in enumerate(_owners("few", 3)):
        make_job(f"few-{i}", owner=owner)
    admin_client.get(url)  # warm the session and content-type caches
    with CaptureQueriesContext(connection) as few:
        assert admin_client.get(url).status_code == 200
    for i, owner in enumerate(_owners("many", 150)):
        status = [Status.COMPLETE, Status.FAILED, Status.RUNNING, Status.QUEUED][i % 4]
        make_job(f"many-{i}", status, owner=owner, server=f"10.0.0.{i % 5}:4730")
    with django_assert_num_queries(len(few)):
        response = admin_client.get(url)
    assert response.status_code == 200
    assert len(response.context["cl"].result_list) == 50  # one full page
    # Owners come in the page's query (a JOIN), never one query per row.
    user_table = User._meta.db_table
    per_row = [q["sql"] for q in few if f'FROM "{user_table}"' in q["sql"]]
    assert len(per_row) == 1  # the logged-in admin (session auth), not the owners


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("status__exact=failed", {"b"}),
        ("function=tests.fail", {"c"}),
        ("server=10.0.0.9%3A4730", {"c"}),
        ("q=b", {"b"}),  # exact key
        ("q=tests.fa", {"c"}),  # function prefix
        ("q=alice", {"a"}),  # owner username
        ("created_at__gte={old}", {"a", "b"}),
    ],
)
def test_filters_and_search(admin_client, query, expected):
    alice = User.objects.create(username="alice")
    make_job("a", owner=alice)
    make_job("b", Status.FAILED)
    make_job(
        "c",
        function="tests.fail",
        server="10.0.0.9:4730",
        created_at=timezone.now() - timedelta(days=10),
    )
    old = quote((timezone.now() - timedelta(days=1)).isoformat())
    response = admin_client.get(f"{reverse(CHANGELIST)}?{query.format(old=old)}")
    assert response.status_code == 200
    assert {job.key for job in response.context["cl"].result_list} == expected


def test_date_hierarchy_offers_the_range_from_the_first_to_the_last_job(admin_client):
    now = timezone.now()
    make_job("now")
    make_job("two-years-ago", created_at=now - timedelta(days=800))
    response = admin_client.get(reverse(CHANGELIST))
    years = {str(y) for y in range(now.year - 3, now.year + 1)}
    shown = {y for y in years if f"created_at__year={y}" in response.content.decode()}
    first = timezone.localtime(now - timedelta(days=800)).year
    # Every year in between, including one without jobs: two index probes, no scan.
    assert shown == {str(y) for y in range(first, timezone.localtime(now).year + 1)}


def test_filter_choices_are_the_distinct_values(admin_client):
    make_job("a", function="b.second", server="10.0.0.2:4730")
    make_job("b", function="a.first", server="10.0.0.1:4730")
    make_job("c", function="b.second", server="")
    response = admin_client.get(reverse(CHANGELIST))
    filters = {
        spec.title: [c["display"] for c in spec.choices(response.context["cl"])]
        for spec in response.context["cl"].filter_specs
    }
    assert filters["function"] == ["All", "a.first", "b.second"]
    assert filters["server"] == ["All", "10.0.0.1:4730", "10.0.0.2:4730"]


def test_date_hierarchy_drills_down_by_created(admin_client):
    make_job("now")
    make_job("last-year", created_at=timezone.now() - timedelta(days=400))
    year = timezone.now().year
    response = admin_client.get(f"{reverse(CHANGELIST)}?created_at__year={year}")
    assert {job.key for job in response.context["cl"].result_list} == {"now"}


# -- the job page ------------------------------------------------------------------------


def test_the_job_page_is_read_only_and_escapes_everything(admin_client):
    job = make_job(
        "evil",
        Status.FAILED,
        arguments={"args": ["<script>alert(1)</script>"], "kwargs": {"n": 1}},
        data={"partial": "<b>bold</b>"},
        error="ValueError: <img src=x>",
        traceback='Traceback (most recent call last):\n  File "<x>", line 1\nValueError: <img>',
    )
    response = admin_client.get(change_url(job))
    html = response.content.decode()
    assert response.status_code == 200
    assert "<script>alert(1)" not in html
    assert "<img src=x>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "&lt;b&gt;bold&lt;/b&gt;" in html
    assert "File &quot;&lt;x&gt;&quot;, line 1" in html
    # Pretty-printed: one JSON key per line, indented.
    assert "&quot;args&quot;: [\n    &quot;&lt;script&gt;" in html
    # Read-only: no form inputs for the record, no save button.
    assert 'name="function"' not in html
    assert 'name="_save"' not in html
    for label in ("Timeline", "Waited in the queue", "Ran for", "Arguments", "Outcome"):
        assert label in html
    assert "3.0 s" in html  # ran for


def test_the_page_of_a_running_job_has_the_live_widget(admin_client):
    running = make_job("live", Status.RUNNING)
    finished = make_job("done")
    html = admin_client.get(change_url(running)).content.decode()
    assert "data-gearattach" in html
    status_url = re.search(r'data-status-url="(/gearattach/jobs/[^"]+)"', html)
    assert status_url is not None
    # The widget's token is bound to the operator, who may follow the job with it.
    state = admin_client.get(status_url[1]).json()
    assert state["status"] == "running"
    assert "data-gearattach" not in admin_client.get(change_url(finished)).content.decode()


def test_no_add_and_no_bulk_delete_of_active_records(admin_client):
    assert admin_client.get(reverse("admin:django_gearattach_job_add")).status_code == 403
    actions = admin_client.get(reverse(CHANGELIST)).context["action_form"].fields["action"]
    names = [name for name, _ in actions.choices]
    assert names == ["", "retry_jobs", "cancel_jobs", "delete_finished"]


# -- actions -----------------------------------------------------------------------------


def test_retry_resubmits_the_arguments_under_a_new_key(admin_client, gearmand, worker):
    original = submit("tests.add", [20, 22])
    wait_for_status("tests.add", original.key, Status.COMPLETE)
    response = run_action(admin_client, "retry_jobs", [original])
    retried = Job.objects.exclude(pk=original.pk).get()
    assert retried.key != original.key
    assert retried.arguments == original.arguments
    assert texts(response) == [f"Resubmitted 1 job under a new key: {retried.key}."]
    assert wait_for_status("tests.add", retried.key, Status.COMPLETE).result == 42


def test_retry_skips_active_jobs_and_unknown_arguments(admin_client, settings):
    settings.GEARATTACH = {**settings.GEARATTACH, "IMMEDIATE": True}
    active = make_job("queued", Status.QUEUED)
    unknown = make_job("lost", Status.LOST, arguments=None)
    response = run_action(admin_client, "retry_jobs", [active, unknown])
    assert texts(response) == [
        "1 job is still queued or running and was not retried.",
        "1 job has no recorded arguments and cannot be retried.",
    ]
    assert Job.objects.count() == 2


def test_resubmitting_a_queued_unique_returns_its_handle_without_a_second_job(gearmand):
    """The fact cancel relies on, checked against gearmand 1.1.20."""
    address = Address.parse(gearmand.address)
    job = submit("tests.add", [1, 2])
    [line] = admin_command(address, "show jobs")
    handle = line.split("\t")[0]
    again = get_client().submit_background(address, "tests.add", job.key.encode(), b"{}")
    assert again.decode() == handle
    assert admin_command(address, "show jobs") == [line]
    assert admin_command(address, "status") == ["tests.add\t1\t0\t0"]


def test_cancel_removes_a_queued_job_which_then_never_runs(
    admin_client, gearmand, worker_factory, log_path
):
    address = Address.parse(gearmand.address)
    doomed = submit("tests.record", [str(log_path)])
    response = run_action(admin_client, "cancel_jobs", [doomed])
    assert texts(response) == ["Cancelled 1 queued job."]
    doomed.refresh_from_db()
    assert (doomed.status, doomed.error) == (Status.CANCELLED, "cancelled before it started")
    # Cancelled jobs are only marked ignored: gearmand frees it when a worker asks for work.
    assert get_client().status_unique(address, doomed.key.encode()).known
    worker_factory([gearmand])
    after = submit("tests.record", [str(log_path)])
    wait_for_status("tests.record", after.key, Status.COMPLETE)
    assert len(executions(log_path)) == 1  # only the second job ran
    wait_until(lambda: not get_client().status_unique(address, doomed.key.encode()).known)
    doomed.refresh_from_db()
    assert doomed.status == Status.CANCELLED
    events = [e.as_dict() for e in attach(doomed)]
    assert events == [{"event": "failed", "error": "cancelled before it started"}]


def test_cancel_asks_the_worker_of_a_running_job_to_stop_it(
    admin_client, gearmand, worker, log_path
):
    running = submit("tests.cancellable", [str(log_path)])
    wait_for_status("tests.cancellable", running.key, Status.RUNNING)
    finished = make_job("finished")
    response = run_action(admin_client, "cancel_jobs", [running, finished])
    assert texts(response) == [
        "Asked the worker running 1 job to stop it: it ends cancelled at its next progress "
        "report, or is stopped 5s later.",
        "1 job had already finished.",
    ]
    record = wait_for_status("tests.cancellable", running.key, Status.CANCELLED)
    assert record.error.startswith("JobCancelled: ")


def test_cancel_with_gearmand_down_still_keeps_the_task_from_running(admin_client, gearmand):
    job = submit("tests.add", [1, 2])
    gearmand.stop()
    response = run_action(admin_client, "cancel_jobs", [job])
    [done, note] = texts(response)
    assert done == "Cancelled 1 queued job."
    assert "was not told" in note
    assert "a worker will refuse the job" in note
    job.refresh_from_db()
    assert job.status == Status.CANCELLED


def test_delete_finished_keeps_active_records(admin_client):
    finished = [make_job("c1"), make_job("f1", Status.FAILED)]
    active = [make_job("q1", Status.QUEUED), make_job("r1", Status.RUNNING)]
    response = run_action(admin_client, "delete_finished", finished + active)
    assert texts(response) == [
        "Deleted 2 finished records.",
        "2 queued or running records were kept.",
    ]
    assert set(Job.objects.values_list("key", flat=True)) == {"q1", "r1"}


# -- permissions -------------------------------------------------------------------------


@pytest.fixture
def viewer(client):
    user = User.objects.create_user("viewer", password="pw", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="view_job"))
    client.force_login(user)
    return client


def test_a_view_only_operator_sees_jobs_but_gets_no_actions(viewer):
    job = make_job("k")
    response = viewer.get(reverse(CHANGELIST))
    assert response.status_code == 200
    assert response.context["action_form"] is None
    assert viewer.get(change_url(job)).status_code == 200
    response = viewer.post(
        reverse(CHANGELIST), {"action": "delete_finished", "_selected_action": [str(job.pk)]}
    )
    assert Job.objects.filter(pk=job.pk).exists()


def test_servers_page_needs_staff_and_the_view_permission(client, viewer, gearmand):
    url = reverse(SERVERS)
    assert viewer.get(url).status_code == 200
    nobody = User.objects.create_user("staff", password="pw", is_staff=True)
    client.force_login(nobody)
    assert client.get(url).status_code == 403
    client.logout()
    response = client.get(url)
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("admin:login"))


# -- the servers page --------------------------------------------------------------------


def test_servers_page_reports_each_server(admin_client, settings, gearmand, worker, tmp_path):
    missing = f"127.0.0.1:{free_port()}"
    settings.GEARATTACH = {**settings.GEARATTACH, "SERVERS": [gearmand.address, missing]}
    gate = tmp_path / "gate"
    log = tmp_path / "log"
    address = Address.parse(gearmand.address)
    data = json.dumps({"args": [str(log), str(gate)]}).encode()
    jobs = [
        get_client().submit_background(address, "tests.record", f"key-{i}".encode(), data)
        for i in range(3)
    ]
    assert len(set(jobs)) == 3
    wait_until(lambda: admin_command(address, "status") and _running(address) == 1)
    started = time.monotonic()
    response = admin_client.get(reverse(SERVERS))
    assert time.monotonic() - started < 5
    servers = {s.address: s for s in response.context["servers"]}
    assert servers[gearmand.address].reachable
    assert servers[gearmand.address].version.startswith("1.1")
    [record] = [f for f in servers[gearmand.address].functions if f.function == "tests.record"]
    assert (record.waiting, record.running) == (2, 1)
    assert record.workers == 1
    assert not servers[missing].reachable
    html = response.content.decode()
    badge = '<span class="gearattach-badge" style="background:#a40000">unreachable'
    assert f"{missing}\n    {badge}" in html
    assert "<td>tests.record</td><td>2</td><td>1</td>" in html
    gate.touch()


def test_servers_page_flags_functions_no_worker_serves(admin_client, gearmand, worker):
    address = Address.parse(gearmand.address)
    get_client().submit_background(address, "legacy.resize", b"stuck", b"{}")
    response = admin_client.get(reverse(SERVERS))
    [flagged] = response.context["unserved"]
    assert (flagged.function, flagged.waiting) == ("legacy.resize", 1)
    html = response.content.decode()
    assert "legacy.resize: 1 job waits, and no worker on any server registers" in html
    assert "tests.add:" not in html  # served by the worker, though nothing waits


def _running(address: Address) -> int:
    for line in admin_command(address, "status"):
        name, _total, running, _workers = line.split("\t")
        if name == "tests.record":
            return int(running)
    return 0


def test_only_finished_records_can_be_deleted_from_their_page(admin_client):
    running, done = make_job("r", Status.RUNNING), make_job("d")
    delete = "admin:django_gearattach_job_delete"
    assert admin_client.get(reverse(delete, args=[running.pk])).status_code == 403
    assert 'class="deletelink"' not in admin_client.get(change_url(running)).content.decode()
    assert admin_client.get(reverse(delete, args=[done.pk])).status_code == 200


def test_a_queued_jobs_page_says_when_no_worker_runs_its_function(admin_client, gearmand):
    """Issue 21: the job page says why a queued job does not start."""
    from django_gearattach import presence

    presence.forget()
    job = make_job("lonely", Status.QUEUED, server=gearmand.address)
    page = admin_client.get(change_url(job)).content.decode()
    assert f"No worker is running for {job.function} on {gearmand.address}" in page
    done = make_job("done", Status.COMPLETE, server=gearmand.address)
    assert "No worker is running" not in admin_client.get(change_url(done)).content.decode()
