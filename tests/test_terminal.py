"""``manage.py gearattach`` on a real terminal (a pty): the progress bar, the outcome block,
the tables; and JSON again with ``--json`` on the same terminal."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.db import connection

from django_gearattach import submit
from tests.helpers import foreground_clients
from tests.terminal import run_in_terminal

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def gate(tmp_path: Path) -> Iterator[Path]:
    """A file the job waits for; opened at teardown, so no job outlives its test."""
    path = tmp_path / "gate"
    yield path
    path.touch()


def command_env(gearmand) -> dict[str, str]:
    env = {
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "GEARATTACH_TEST_DATABASE": str(connection.settings_dict["NAME"]),
        "GEARATTACH_SERVERS": gearmand.address,
    }
    if os.environ.get("DATABASE_URL"):
        env["DATABASE_URL"] = os.environ["DATABASE_URL"]
    return env


def gearattach(*args: str) -> list[str]:
    return [sys.executable, "-m", "django", "gearattach", *args]


def test_attach_draws_a_progress_bar_with_the_step_and_time_then_the_outcome(
    gearmand, worker, gate
):
    job = submit("tests.chatty", [str(gate)], key="term-1")

    def open_gate_once_the_bar_shows(output: str) -> None:
        # Once the command has joined the running job, so that it sees every report.
        if not gate.exists() and foreground_clients(gearmand.address, job.key):
            gate.touch()

    screen = run_in_terminal(
        gearattach("attach", "tests.chatty", job.key),
        command_env(gearmand),
        while_running=open_gate_once_the_bar_shows,
    )
    text = screen.text
    assert screen.code == 0, text
    assert "\x1b[" in screen.raw  # drawn for a terminal: colours and cursor moves
    assert "Attached to tests.chatty [term-1]" in text
    assert "━" in text  # rich's bar
    assert "100%" in text
    assert '{"partial":[1,2]}' in text  # the step text: the job's last data
    assert "warning: careful" in text
    assert "0:00:0" in text  # the elapsed time column
    assert "complete tests.chatty [term-1]" in text  # the outcome block's title
    assert '"answer": 42' in text
    assert '{"event"' not in text  # not the JSON lines


def test_attach_shows_a_failure_as_a_red_block_and_exits_1(gearmand, worker):
    job = submit("tests.fail", ["nope"], key="term-2")
    screen = run_in_terminal(gearattach("attach", "tests.fail", job.key), command_env(gearmand))
    assert screen.code == 1, screen.text
    assert "failed tests.fail [term-2]" in screen.text
    assert "ValueError: nope" in screen.text


def test_status_and_servers_print_aligned_tables_and_json_on_request(gearmand):
    submit("tests.add", [1, 2], key="term-3")
    env = command_env(gearmand)
    screen = run_in_terminal(gearattach("status", "tests.add", "term-3"), env)
    assert screen.code == 0, screen.text
    # No worker runs tests.add here: the command says so after the table.
    *table, warning = [line for line in screen.text.splitlines() if line.strip()]
    assert warning.startswith("warning: no worker is running for 'tests.add'")
    rows = dict(line.split(None, 1) for line in table)
    assert rows["function"].strip() == "tests.add"
    assert rows["status"].strip() == "queued"
    assert rows["server"].strip() == gearmand.address
    # Aligned: every value starts in the same column.
    columns = {len(line) - len(line.split(None, 1)[1]) for line in table}
    assert len(columns) == 1, table

    screen = run_in_terminal(gearattach("servers"), env)
    assert screen.code == 0, screen.text
    header = next(line for line in screen.text.splitlines() if "function" in line)
    assert header.split() == [
        "┃",
        "server",
        "┃",
        "state",
        "┃",
        "version",
        "┃",
        "function",
        "┃",
        "queued",
        "┃",
        "running",
        "┃",
        "workers",
        "┃",
    ]
    row = next(line for line in screen.text.splitlines() if "tests.add" in line)
    assert [cell.strip() for cell in row.split("│")[1:-1]][:2] == [gearmand.address, "reachable"]
    assert [cell.strip() for cell in row.split("│")[1:-1]][3:] == ["tests.add", "1", "0", "0"]

    screen = run_in_terminal(gearattach("servers", "--json"), env)
    (report,) = [json.loads(line) for line in screen.text.splitlines() if line.strip()]
    assert report["reachable"] is True
    assert {"function": "tests.add", "queued": 1, "running": 0, "workers": 0} in report[
        "functions"
    ]
