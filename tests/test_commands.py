"""``manage.py gearattach``: submit, attach, status and servers."""

from __future__ import annotations

import io
import json
import re
from typing import Any

import pytest
from django.core.management import CommandError, call_command

from django_gearattach.models import Job
from django_gearattach.testing import free_port
from tests.helpers import wait_for_status

pytestmark = pytest.mark.django_db(transaction=True)


def run(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    try:
        call_command("gearattach", *args, stdout=out, stderr=err)
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    return code, out.getvalue(), err.getvalue()


def lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines()]


def test_submit_prints_the_key_and_attach_prints_events(gearmand, worker, tmp_path):
    code, out, _ = run(
        "submit",
        "tests.record",
        "--args",
        json.dumps([str(tmp_path / "log")]),
        "--kwargs",
        '{"steps": 2}',
        "--key",
        "cli-1",
    )
    assert (code, out.strip()) == (0, "cli-1")
    code, out, _ = run("attach", "tests.record", "cli-1", "--timeout", "20")
    events = lines(out)
    assert code == 0
    assert events[-1]["event"] == "complete"
    assert set(events[-1]["result"]) == {"done"}


def test_attach_exits_1_on_failure(gearmand, worker):
    run("submit", "tests.fail", "--key", "cli-2", "--args", '["nope"]')
    code, out, _ = run("attach", "tests.fail", "cli-2", "--timeout", "20")
    assert code == 1
    assert lines(out)[-1] == {"event": "failed", "error": "ValueError: nope"}


def test_attach_exits_2_for_an_unknown_key_and_creates_nothing(gearmand):
    code, out, err = run("attach", "tests.add", "never-submitted")
    assert (code, out) == (2, "")
    assert "never submitted" in err
    assert not Job.objects.exists()


def test_status_prints_the_record(gearmand):
    run("submit", "tests.add", "--args", "[1, 2]", "--key", "cli-3")
    code, out, _ = run("status", "tests.add", "cli-3")
    record = json.loads(out)
    assert (code, record["status"], record["key"]) == (0, "queued", "cli-3")
    code, _, err = run("status", "tests.add", "nope")
    assert code == 2
    assert "never submitted" in err


def test_servers_reports_health_and_queue(gearmand, settings):
    down = f"127.0.0.1:{free_port()}"
    settings.GEARATTACH = {**settings.GEARATTACH, "SERVERS": [gearmand.address, down]}
    run("submit", "tests.add", "--args", "[1, 2]")
    code, out, _ = run("servers")
    assert code == 0
    up, gone = lines(out)
    assert up["reachable"] is True
    assert up["version"].startswith("1.1")
    assert {"function": "tests.add", "queued": 1, "running": 0, "workers": 0} in up["functions"]
    assert gone == {"server": down, "reachable": False, "error": gone["error"]}
    assert "cannot connect" in gone["error"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["submit", "tests.add", "--args", "{not json"], "not valid JSON"),
        (["submit", "tests.add", "--args", '{"a": 1}'], "must be a JSON list"),
        (["submit", "tests.add", "--key", "x" * 64], "at most 63 bytes"),
    ],
)
def test_bad_input_is_a_clear_error(gearmand, args, message):
    with pytest.raises(CommandError, match=message):
        call_command("gearattach", *args)
    assert not Job.objects.exists()


def test_submit_with_delay_or_at_schedules_the_job(gearmand):
    code, out, _ = run("submit", "tests.add", "--args", "[1, 2]", "--delay", "60")
    job = Job.objects.get(key=out.strip())
    assert (code, job.status) == (0, "scheduled")
    code, out, _ = run("submit", "tests.add", "--at", "2031-01-01T09:00:00+01:00", "--key", "at")
    job = Job.objects.get(key="at")
    assert (code, job.status, job.scheduled_for.isoformat()) == (
        0,
        "scheduled",
        "2031-01-01T08:00:00+00:00",
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--delay", "-5"], "zero or more seconds"),
        (["--delay", "soon"], "not a number of seconds"),
        (["--at", "2031-01-01T09:00:00"], "has no time zone"),
        (["--at", "tomorrow"], "not an ISO 8601 time"),
        (["--at", "2031-01-01T09:00:00Z", "--delay", "1"], "not allowed with argument"),
    ],
)
def test_bad_schedules_on_the_command_line(gearmand, args, message):
    with pytest.raises(CommandError, match=message):
        call_command("gearattach", "submit", "tests.add", *args)
    assert not Job.objects.exists()


def test_an_unregistered_function_exits_2_naming_close_matches(gearmand):
    code, out, err = run("submit", "tests.ad", "--args", "[1, 2]")
    assert (code, out) == (2, "")
    assert "no task named 'tests.ad' is defined in this process" in err
    assert f"no worker on {gearmand.address} registers it" in err
    assert "Did you mean 'tests.add'" in err
    assert "Nothing was submitted" in err
    assert "pass --unregistered" in err
    assert not Job.objects.exists()
    code, out, err = run("attach", "tests.ad", "some-key")
    assert (code, out) == (2, "")
    assert "Did you mean 'tests.add'" in err
    # A foreign worker's function can still be submitted on purpose, and from code.
    code, out, _ = run("submit", "legacy.resize", "--unregistered", "--key", "foreign")
    assert (code, out.strip()) == (0, "foreign")
    # ...and attached to, since its record exists.
    assert Job.objects.filter(function="legacy.resize", key="foreign").exists()


def test_submit_and_attach_say_when_no_worker_runs_the_function(gearmand):
    """Issue 21: a job nobody can run looked like a slow one."""
    code, out, err = run("submit", "tests.add", "--args", "[1, 2]", "--key", "lonely")
    assert (code, out.strip()) == (0, "lonely")
    said = f"no worker is running for 'tests.add' on {gearmand.address}"
    assert f"warning: {said}" in err
    printed = io.StringIO()
    with pytest.raises(CommandError, match="did not start in time: " + re.escape(said)):
        call_command(
            "gearattach", "attach", "tests.add", "lonely", "--timeout", "1", stdout=printed
        )
    [unserved] = lines(printed.getvalue())
    assert unserved["event"] == "unserved"
    assert unserved["message"].startswith(said)
    # `status FUNCTION KEY` prints the record and says it too.
    code, out, err = run("status", "tests.add", "lonely")
    assert (code, json.loads(out)["status"]) == (0, "queued")
    assert f"warning: {said}" in err


def test_status_flags_functions_that_no_worker_serves(gearmand, worker):
    run("submit", "legacy.resize", "--unregistered", "--key", "stuck-1")
    run("submit", "tests.add", "--args", "[1, 2]", "--key", "served")
    wait_for_status("tests.add", "served", "complete")  # the worker has registered
    code, out, err = run("status")
    report = json.loads(out)
    assert code == 0
    assert report["servers"] == {gearmand.address: True}
    assert report["unserved"] == [
        {"function": "legacy.resize", "waiting": 1, "servers": [gearmand.address]}
    ]
    assert "legacy.resize: 1 job(s) waiting and no worker on any server" in err
