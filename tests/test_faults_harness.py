"""The fault suite's counting, which needs no root (the suite itself: ``make faults``)."""

from pathlib import Path

import pytest

from tests.faults import hosts
from tests.faults.run import Row, executions, keep_twice, most_at_once, print_table, resubmitted

LOG = """\
gp-1 start w1 10 1.0
gp-1 end w1 10 1.2
gp-2 start w1 11 1.0
gp-2 start w2 20 5.0
gp-2 end w2 20 5.2
gp-3 start w1 12 1.0
gp-3 end w1 12 1.2
gp-3 start w2 21 3.0
gp-3 end w2 21 3.2
gp-30 start w2 21 3.0
gpx-1 start w2 21 3.0
gpx-1 start w2 21 3.0
"""


def test_a_key_that_started_twice_counts_once_and_ending_twice_is_told_apart(
    tmp_path: Path,
) -> None:
    (tmp_path / "executions.log").write_text(LOG)
    # gp-2 was interrupted and ran again; gp-3 ran to the end twice; another prefix
    # (gpx-) is not counted.
    assert executions(tmp_path, "gp") == (2, 1)
    assert executions(tmp_path, "gpx") == (1, 0)


def test_no_log_means_nothing_ran(tmp_path: Path) -> None:
    assert executions(tmp_path, "gp") == (0, 0)


def test_twice_log_keeps_every_execution_of_those_keys(tmp_path: Path) -> None:
    (tmp_path / "executions.log").write_text(LOG)
    keep_twice(tmp_path)
    kept = (tmp_path / "twice.log").read_text().splitlines()
    assert {line.split()[0] for line in kept} == {"gp-2", "gp-3", "gpx-1"}
    assert len(kept) == 9  # gp-2: 3 lines, gp-3: 4, gpx-1: 2


def test_resubmissions_are_counted_per_key_from_the_worker_logs(tmp_path: Path) -> None:
    (tmp_path / "w1-worker.log").write_text(
        "recovery sweep: gearmand 10.213.7.1:4730 had lost faults.body[at-4] (queued);"
        " resubmitted it\n"
        "recovery sweep: gearmand had lost it: faults.body[at-4] (queued) resubmitted to x\n"
        "recovery sweep: gearmand had lost it: faults.body[at-40] (queued) resubmitted to x\n"
        "job faults.body[at-5] abandoned: connection refused\n"
    )
    (tmp_path / "w2-worker.log").write_text(
        "recovery sweep: gearmand had lost it: faults.body[at-6] (running) resubmitted to x\n"
    )
    assert resubmitted(tmp_path, "at") == 3
    assert resubmitted(tmp_path, "a") == 0


def test_table_has_one_line_per_row_and_the_notes(capsys: pytest.CaptureFixture[str]) -> None:
    rows = [
        Row("no fault", "nf", 200, 200, 0, "9.9", ["when counting began: 200 queued"]),
        Row("gearmand host killed", "gm", 200, 198, 2, "never", [], twice=1),
    ]
    print_table(rows)
    out = capsys.readouterr().out.splitlines()
    assert out[0].split(" | ")[0].strip() == "scenario"
    assert [cell.strip() for cell in out[3].split("|")] == [
        "gearmand host killed",
        "200",
        "198",
        "2",
        "1",
        "never",
    ]
    assert "  no fault: when counting began: 200 queued" in out


def test_host_addresses_and_names_carry_the_prefix() -> None:
    assert hosts.ns("g1") == "gaf-g1"
    assert hosts.ip("db") == f"{hosts.SUBNET}.40"
    assert len({hosts.ip(host) for host in hosts.HOSTS}) == len(hosts.HOSTS)
    # Interface names are limited to 15 bytes: the longest is the bridge side "gaf-ctl-s".
    assert max(len(f"{hosts.PREFIX}{host}-s") for host in hosts.HOSTS) <= 15


def test_most_at_once_counts_overlapping_bodies_of_the_row_only(tmp_path: Path) -> None:
    (tmp_path / "executions.log").write_text(
        "lc-1 start w1 10 1.0\n"
        "lc-1 end w1 10 1.5\n"
        "lc-2 start w2 20 1.4\n"  # overlaps lc-1
        "lc-2 end w2 20 2.0\n"
        "lc-3 start w2 20 2.0\n"  # starts as lc-2 ends: not at once
        "lc-3 end w2 20 2.5\n"
        "lcx-1 start w1 10 1.1\n"  # another row
    )
    assert most_at_once(tmp_path, "lc") == 2
    assert most_at_once(tmp_path, "nothing") == 0
