"""``@offload(key=..., shared=True, max_age=1, stale_while_revalidate=60)``: the stored
page answers while fresh, then at once while one refresh runs, marked "updating".

Real gearmand and two worker processes (the web tests' shared worker).
"""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import close_old_connections
from django.http import HttpRequest, HttpResponse
from django.test import Client
from django.views.generic import View

from django_gearattach.models import Job, Status
from django_gearattach.policies import InvalidPolicy, RunReason
from django_gearattach.web.decorators import OffloadMixin, offload
from django_gearattach.web.messages import OFFLOAD_FUNCTION
from django_gearattach.web.responses import open_response
from tests.conftest import executions
from tests.helpers import wait_for_status, wait_until

pytest_plugins = ["tests.webfixtures"]

pytestmark = pytest.mark.django_db(transaction=True)

URL = "/offload/yearly/"


def _built(params: dict[str, str]) -> tuple[Job, str]:
    """Ask for the page once and wait for its first run: (its record, its execution)."""
    first = Client().get(URL, params)
    assert first.status_code == 202  # the processing page
    job = first.context["job"]
    done = wait_for_status(OFFLOAD_FUNCTION, job.key, Status.COMPLETE)
    return done, executions(Path(params["log"]))[0]


def test_the_stored_page_answers_then_serves_stale_while_one_refresh_runs(
    cluster, log_path, tmp_path
):
    params = {"year": "2031", "log": str(log_path)}
    job, first = _built(params)
    stored = Client().get(URL, params)
    assert stored.status_code == 200
    assert first in stored.content.decode()
    assert "gearattach-updating" not in stored.content.decode()
    time.sleep(1.2)  # past max_age

    gate = tmp_path / "gate"  # the refresh runs with the request that started it: held
    held = {**params, "gate": str(gate)}
    stale = Client().get(URL, held)
    page = stale.content.decode()
    assert stale.status_code == 200
    assert first in page  # the stored page, at once
    assert 'class="gearattach-updating"' in page
    assert page.index("gearattach-updating") < page.index("</body>")
    assert int(stale["Age"]) >= 1
    assert re.search(r"this page was built \d+ seconds? ago", page)  # the age, in words
    assert "no-store" in stale["Cache-Control"]
    for _ in range(5):  # while the refresh runs, from the record alone
        again = Client().get(URL, held)
        assert first in again.content.decode()
    refreshing = Job.objects.get(pk=job.pk)
    assert (refreshing.run_number, refreshing.run_reason) == (2, RunReason.REFRESH)
    assert refreshing.is_active

    # Where the notice's widget goes when the refresh is ready: the page's own URL (no
    # run's token in it), which shows the stale page until then, then the new one.
    page_url = stale.content.decode().split('data-outcome-url="')[1].split('"')[0]
    page_url = page_url.replace("&amp;", "&")
    assert page_url.startswith(URL)
    assert "gearattach=" not in page_url
    assert first in Client().get(page_url).content.decode()
    gate.touch()
    wait_until(lambda: Job.objects.get(pk=job.pk).status == Status.COMPLETE, what="the refresh")
    second = executions(log_path)[1]
    assert second in Client().get(page_url).content.decode()
    fresh = Client().get(URL, params)
    assert second in fresh.content.decode()
    assert "gearattach-updating" not in fresh.content.decode()
    assert len(executions(log_path)) == 2


def test_concurrent_visitors_of_a_stale_page_get_it_at_once_and_start_one_refresh(
    cluster, log_path, tmp_path
):
    params = {"year": "2032", "log": str(log_path)}
    job, first = _built(params)
    time.sleep(1.2)
    held = {**params, "gate": str(tmp_path / "gate")}
    pages: list[tuple[int, str]] = []
    start = threading.Event()

    def visit() -> None:
        try:
            start.wait(10)
            client = Client()
            for _ in range(8):
                response = client.get(URL, held)
                pages.append((response.status_code, response.content.decode()))
        finally:
            close_old_connections()

    threads = [threading.Thread(target=visit) for _ in range(8)]
    for thread in threads:
        thread.start()
    start.set()
    for thread in threads:
        thread.join(30)
    assert len(pages) == 64
    assert all(status == 200 and first in page for status, page in pages)
    assert all("gearattach-updating" in page for _, page in pages)
    (tmp_path / "gate").touch()
    wait_until(lambda: Job.objects.get(pk=job.pk).status == Status.COMPLETE, what="the refresh")
    record = Job.objects.get(pk=job.pk)
    assert (record.run_number, record.run_reason) == (2, RunReason.REFRESH)
    assert len(executions(log_path)) == 2  # exactly one refresh


def test_a_program_gets_the_stale_response_as_it_was_stored(cluster, log_path, tmp_path):
    params = {"year": "2033", "log": str(log_path)}
    _built(params)
    stored = Client().get(URL, params).content
    time.sleep(1.2)
    held = {**params, "gate": str(tmp_path / "gate")}
    for _ in range(2):  # the first starts the refresh, the second is answered by the record
        answer = Client().get(URL, held, HTTP_ACCEPT="application/json")
        assert answer.status_code == 200
        assert answer.content == stored  # no notice for a program
        assert int(answer["Age"]) >= 1
    (tmp_path / "gate").touch()


def _view(request: HttpRequest) -> HttpResponse:
    return HttpResponse("report")


def test_policy_options_on_a_view_without_a_key_are_refused_at_import():
    with pytest.raises(ImproperlyConfigured, match="needs key="):
        offload(max_age=600)(_view)
    with pytest.raises(InvalidPolicy, match="needs a max_age"):
        offload(key=lambda request: "k", stale_while_revalidate=60)(_view)
    with pytest.raises(InvalidPolicy, match="on_conflict must be one of"):

        class Report(OffloadMixin, View):
            offload_on_conflict = "newest"


def test_files_posted_for_a_follow_up_wait_for_it(cluster, log_path, tmp_path):
    """``on_conflict="follow_up"`` on a view that takes files: the upload of the request
    that asked for the follow-up is kept for it (not deleted as another request's)."""
    client = Client()
    gate = tmp_path / "gate"
    first = client.post(
        "/offload/upload-queue/?log=" + str(log_path) + "&gate=" + str(gate),
        {"document": SimpleUploadedFile("a.txt", b"first file")},
    )
    job = first.context["job"]
    wait_for_status(OFFLOAD_FUNCTION, job.key, Status.RUNNING)
    client.post(
        "/offload/upload-queue/?log=" + str(log_path),
        {"document": SimpleUploadedFile("b.txt", b"second file")},
    )
    assert Job.objects.get(pk=job.pk).next_reason == "follow_up"
    gate.touch()
    wait_until(
        lambda: Job.objects.filter(pk=job.pk, run_number=2, status=Status.COMPLETE).exists(),
        what="the follow-up",
    )
    record = Job.objects.get(pk=job.pk)
    assert record.error == ""
    page = open_response(record.result)
    assert page is not None
    assert "second file" in page["html"]
