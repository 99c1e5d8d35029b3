"""``wire``: the JSON messages a browser receives about a job."""

from __future__ import annotations

import json

import pytest

from django_gearattach.attachment import JobEvent
from django_gearattach.models import Job, Status
from django_gearattach.web.messages import (
    BROKEN,
    CANNOT_FOLLOW,
    GENERIC_ERROR,
    MISSING,
    OFFLOAD_FUNCTION,
    PONG,
    PUBLIC_ERRORS,
    RECONNECT,
    complete_message,
    error_frame,
    failed_message,
    message_for,
    outcome_message,
    snapshot,
    state,
    summary,
)
from django_gearattach.web.responses import stored_response

TASK = "tests.add"
COOKIE = {"name": "sessionid", "value": "s3cr3t", "httponly": True}
HEADERS = [["X-Private", "token-123"], ["Cache-Control", "no-store"]]


def page(private: bool = True, **body: object) -> dict[str, object]:
    """A stored offload response, as a worker leaves it in the record."""
    return stored_response(
        200,
        "text/html; charset=utf-8",
        {"headers": HEADERS, "cookies": [COOKIE], **body},
        private=private,
    )


def record(status: str, function: str = TASK, **fields: object) -> Job:
    return Job(function=function, key="k1", status=status, **fields)


# -- frames ------------------------------------------------------------------------------


def test_the_fixed_frames_are_json():
    assert json.loads(PONG) == {"type": "pong"}
    assert json.loads(RECONNECT) == {"type": "reconnect"}
    # The hub's notices are never sent as they are: only their wording is.
    assert {MISSING, BROKEN} == {"missing", "broken"}


def test_error_frame_says_what_was_wrong():
    assert json.loads(error_frame("bad token")) == {"type": "error", "error": "bad token"}
    assert json.loads(error_frame(CANNOT_FOLLOW)) == {
        "type": "error",
        "error": "cannot follow the job right now; retry shortly",
    }
    # Quotes and non-ASCII text stay valid JSON.
    assert json.loads(error_frame('a "quoted" été'))["error"] == 'a "quoted" été'


# -- message_for -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("event", "message"),
    [
        (JobEvent("started"), {"type": "started"}),
        (
            JobEvent("status", numerator=3, denominator=10),
            {"type": "status", "numerator": 3, "denominator": 10},
        ),
        (JobEvent("data", data={"rows": 2}), {"type": "data", "data": {"rows": 2}}),
        (JobEvent("data", data=None), {"type": "data", "data": None}),
        (JobEvent("warning", message="disk low"), {"type": "warning", "message": "disk low"}),
        (JobEvent("superseded"), {"type": "superseded"}),
        (
            JobEvent("complete", result={"sum": 3}),
            {"type": "complete", "result": {"sum": 3}, "html": None},
        ),
        (
            JobEvent("failed", error="ZeroDivisionError: x"),
            {"type": "failed", "error": GENERIC_ERROR},
        ),
    ],
)
def test_message_for_each_event(settings, event, message):
    settings.DEBUG = False
    assert message_for(event, TASK) == message
    json.dumps(message)  # every message is JSON


def test_a_failure_carries_the_error_only_with_debug(settings):
    event = JobEvent("failed", error="OperationalError: password=hunter2 host=db:5432")
    settings.DEBUG = False
    assert message_for(event, TASK) == {"type": "failed", "error": "the job failed"}
    settings.DEBUG = True
    assert message_for(event, TASK) == {"type": "failed", "error": event.error}


# -- failed_message ----------------------------------------------------------------------


@pytest.mark.parametrize("error", sorted(PUBLIC_ERRORS))
def test_this_apps_own_failure_texts_reach_every_browser(settings, error):
    settings.DEBUG = False
    assert failed_message(error) == {"type": "failed", "error": error}


def test_the_public_errors_are_the_ones_records_and_operations_produce():
    assert record(Status.LOST).failure_text in PUBLIC_ERRORS
    assert record(Status.CANCELLED).failure_text in PUBLIC_ERRORS
    from django_gearattach.operations import CANCELLED_ERROR

    assert CANCELLED_ERROR in PUBLIC_ERRORS


@pytest.mark.parametrize("debug", [False, True])
@pytest.mark.parametrize("error", [None, ""])
def test_a_failure_without_error_text_is_the_generic_one(settings, debug, error):
    settings.DEBUG = debug
    assert failed_message(error) == {"type": "failed", "error": GENERIC_ERROR}


def test_a_public_error_is_matched_exactly_not_as_a_prefix(settings):
    settings.DEBUG = False
    leaky = "the job was lost: worker at 10.0.0.7 said password=x"
    assert failed_message(leaky) == {"type": "failed", "error": GENERIC_ERROR}


def test_debug_shows_any_error(settings):
    settings.DEBUG = True
    assert failed_message("ValueError: bad row 7") == {
        "type": "failed",
        "error": "ValueError: bad row 7",
    }


# -- complete_message --------------------------------------------------------------------


def test_an_ordinary_task_result_is_passed_as_it_is():
    result = {"html": "<b>not a page</b>", "cookies": ["kept"]}
    # Only offloaded views have a page: another task's result is its return value.
    assert complete_message(result, TASK) == {"type": "complete", "result": result, "html": None}
    assert complete_message(None, TASK) == {"type": "complete", "result": None, "html": None}


def test_an_offloaded_html_page_is_split_out_without_headers_or_cookies():
    message = complete_message(page(html="<h1>Report</h1>"), OFFLOAD_FUNCTION)
    assert message == {
        "type": "complete",
        "html": "<h1>Report</h1>",
        "result": {"status": 200, "content_type": "text/html; charset=utf-8"},
    }
    text = json.dumps(message)
    assert "s3cr3t" not in text
    assert "token-123" not in text


def test_a_shared_offloaded_page_loses_its_headers_and_sealed_cookies_too():
    stored = page(private=False, html="<p>shared</p>")
    assert "sealed_cookies" in stored
    assert "headers" in stored
    message = complete_message(stored, OFFLOAD_FUNCTION)
    assert message["html"] == "<p>shared</p>"
    assert message["result"] == {"status": 200, "content_type": "text/html; charset=utf-8"}
    assert "s3cr3t" not in json.dumps(message)


def test_an_offloaded_text_body_and_a_redirect_have_their_own_parts():
    body = complete_message(page(body='{"ok": true}'), OFFLOAD_FUNCTION)
    assert (body["html"], body["body"]) == (None, '{"ok": true}')
    assert "body" not in body["result"]
    redirect = complete_message(page(redirect="/done/"), OFFLOAD_FUNCTION)
    assert (redirect["html"], redirect["redirect"]) == (None, "/done/")
    assert "headers" not in redirect["result"]
    assert "cookies" not in redirect["result"]


def test_an_offloaded_download_hides_where_the_file_lies():
    download = {
        "path": "gearattach/downloads/abc/report.csv",
        "name": "report.csv",
        "size": 1234,
        "inline": False,
    }
    message = complete_message(page(download=download), OFFLOAD_FUNCTION)
    assert message["download"] == {"name": "report.csv", "size": 1234, "inline": False}
    assert message["html"] is None
    assert "gearattach/downloads" not in json.dumps(message)


def test_an_offload_result_that_is_not_a_stored_response_is_passed_as_it_is():
    # A foreign worker's text reply, or a failed open: nothing to split out.
    assert complete_message("plain text", OFFLOAD_FUNCTION) == {
        "type": "complete",
        "result": "plain text",
        "html": None,
    }


def test_a_sealed_page_that_no_key_opens_is_a_plain_complete(settings):
    stored = page(html="<h1>old</h1>")
    settings.SECRET_KEY = "rotated-without-a-fallback"
    settings.SECRET_KEY_FALLBACKS = []
    message = complete_message(stored, OFFLOAD_FUNCTION)
    assert message == {
        "type": "complete",
        "html": None,
        "result": {"status": 200, "content_type": "text/html; charset=utf-8"},
    }


# -- summary -----------------------------------------------------------------------------


def test_summary_drops_the_offloaded_page():
    full = complete_message(page(html="<h1>Report</h1>"), OFFLOAD_FUNCTION)
    assert summary(full) == {
        "type": "complete",
        "html": None,
        "result": {"status": 200, "content_type": "text/html; charset=utf-8"},
    }
    for part, stored in (("body", page(body="x")), ("redirect", page(redirect="/x/"))):
        short = summary(complete_message(stored, OFFLOAD_FUNCTION))
        assert part not in short
        assert short["html"] is None
    download = {"path": "p", "name": "n", "size": 1, "inline": True}
    assert "download" not in summary(complete_message(page(download=download), OFFLOAD_FUNCTION))


@pytest.mark.parametrize(
    "message",
    [
        {"type": "complete", "result": 3, "html": None},
        {"type": "failed", "error": GENERIC_ERROR},
        {"type": "status", "numerator": 1, "denominator": 2},
        {"type": "data", "data": {"html": "<p>a task's own data</p>"}},
    ],
)
def test_summary_leaves_other_messages_alone(message):
    assert summary(message) == message


# -- snapshot ----------------------------------------------------------------------------


def test_snapshot_of_a_fresh_queued_job_is_empty():
    assert snapshot(record(Status.QUEUED)) == []
    assert snapshot(record(Status.SCHEDULED)) == []


def test_snapshot_of_a_queued_job_with_stored_progress_has_no_started():
    # (A job that was started and requeued after its worker died.)
    job = record(Status.QUEUED, progress_numerator=1, progress_denominator=4)
    assert snapshot(job) == [{"type": "status", "numerator": 1, "denominator": 4}]


def test_snapshot_of_a_running_job_says_started_then_progress_then_data():
    job = record(Status.RUNNING, progress_numerator=2, progress_denominator=5, data={"step": "b"})
    assert snapshot(job) == [
        {"type": "started"},
        {"type": "status", "numerator": 2, "denominator": 5},
        {"type": "data", "data": {"step": "b"}},
    ]
    assert snapshot(record(Status.RUNNING)) == [{"type": "started"}]


def test_snapshot_keeps_falsy_data_but_not_a_missing_one():
    assert snapshot(record(Status.RUNNING, data=0)) == [
        {"type": "started"},
        {"type": "data", "data": 0},
    ]


def test_snapshot_of_a_finished_job_is_its_outcome_only(settings):
    settings.DEBUG = False
    complete = record(
        Status.COMPLETE, result=7, progress_numerator=5, progress_denominator=5, data="x"
    )
    assert snapshot(complete) == [{"type": "complete", "result": 7, "html": None}]
    failed = record(Status.FAILED, error="KeyError: 'secret'")
    assert snapshot(failed) == [{"type": "failed", "error": GENERIC_ERROR}]
    assert snapshot(record(Status.LOST)) == [{"type": "failed", "error": "the job was lost"}]
    assert snapshot(record(Status.CANCELLED)) == [
        {"type": "failed", "error": "the job was cancelled"}
    ]
    cancelled = record(Status.CANCELLED, error="cancelled before it started")
    assert snapshot(cancelled) == [{"type": "failed", "error": "cancelled before it started"}]


def test_snapshot_of_a_finished_offload_is_the_page_without_its_secrets():
    job = record(Status.COMPLETE, function=OFFLOAD_FUNCTION, result=page(html="<p>hi</p>"))
    [message] = snapshot(job)
    assert message["html"] == "<p>hi</p>"
    assert "s3cr3t" not in json.dumps(message)


# -- state -------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [Status.SCHEDULED, Status.QUEUED, Status.RUNNING])
def test_state_of_an_active_job_has_no_outcome(status):
    job = record(status, progress_numerator=1, progress_denominator=3, data=[1])
    assert state(job) == {
        "status": status,
        "numerator": 1,
        "denominator": 3,
        "data": [1],
        "outcome": None,
    }


@pytest.mark.parametrize(
    ("status", "fields", "outcome"),
    [
        (
            Status.COMPLETE,
            {"result": {"n": 1}},
            {"type": "complete", "result": {"n": 1}, "html": None},
        ),
        (
            Status.FAILED,
            {"error": "RuntimeError: dsn=..."},
            {"type": "failed", "error": GENERIC_ERROR},
        ),
        (Status.LOST, {}, {"type": "failed", "error": "the job was lost"}),
        (Status.CANCELLED, {}, {"type": "failed", "error": "the job was cancelled"}),
    ],
)
def test_state_of_a_finished_job_has_its_outcome(settings, status, fields, outcome):
    settings.DEBUG = False
    job = record(status, **fields)
    answer = state(job)
    assert answer == {
        "status": status,
        "numerator": 0,
        "denominator": 0,
        "data": None,
        "outcome": outcome,
    }
    assert state(job, summarised=True) == answer  # nothing to summarise


def test_state_of_a_finished_offload_summarised_has_no_page():
    job = record(Status.COMPLETE, function=OFFLOAD_FUNCTION, result=page(html="<p>hi</p>"))
    assert state(job)["outcome"]["html"] == "<p>hi</p>"
    assert state(job, summarised=True)["outcome"] == {
        "type": "complete",
        "html": None,
        "result": {"status": 200, "content_type": "text/html; charset=utf-8"},
    }


def test_state_is_json():
    job = record(Status.RUNNING, progress_numerator=1, progress_denominator=2, data={"a": 1})
    assert json.loads(json.dumps(state(job)))["status"] == "running"


def test_debug_shows_the_traceback_to_the_jobs_follower(settings):
    """Issue 21: with DEBUG on, a failure shows where it happened, as Django's pages do."""
    failed = record(Status.FAILED)
    failed.error = "ValueError: bad row 7"
    failed.traceback = 'Traceback (most recent call last):\n  File "tasks.py", line 3\n'
    settings.DEBUG = True
    assert outcome_message(failed) == {
        "type": "failed",
        "error": "ValueError: bad row 7",
        "traceback": failed.traceback,
    }
    settings.DEBUG = False
    assert outcome_message(failed) == {"type": "failed", "error": GENERIC_ERROR}
