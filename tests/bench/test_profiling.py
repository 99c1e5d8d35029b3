"""``--profile``'s split of each function's own time between a job's phases."""

from __future__ import annotations

import pytest

from django_gearattach.bench import profiling

PHASES = [
    ("insert", [("records.py", "insert")]),
    ("send", [("submission.py", "_send")]),
]
SUBMIT = ("/x/django_gearattach/submission.py", 10, "submit")
INSERT = ("/x/django_gearattach/records.py", 20, "insert")
SEND = ("/x/django_gearattach/submission.py", 30, "_send")
EXECUTE = ("~", 0, "<method 'execute' of 'sqlite3.Cursor' objects>")
ENCODE = ("/x/django_gearattach/gearman/protocol.py", 40, "encode")


def stats():
    """pstats' shape: func -> (cc, nc, own, cumulative, {caller: (cc, nc, own, cum)})."""
    return {
        SUBMIT: (1, 1, 0.5, 5.0, {}),
        INSERT: (1, 1, 1.0, 3.0, {SUBMIT: (1, 1, 1.0, 3.0)}),
        SEND: (1, 1, 0.25, 1.5, {SUBMIT: (1, 1, 0.25, 1.5)}),
        # sqlite's execute: called by the insert (2 s) only.
        EXECUTE: (1, 1, 2.0, 2.0, {INSERT: (1, 1, 2.0, 2.0)}),
        # encode: called by the insert (0.25 s) and by _send (0.75 s); 1 s of own time.
        ENCODE: (2, 2, 1.0, 1.0, {INSERT: (1, 1, 0.25, 0.25), SEND: (1, 1, 0.75, 0.75)}),
    }


def test_own_time_goes_to_the_phase_whose_entry_called_it():
    by_phase = profiling.split_by_phase(stats(), PHASES)
    assert by_phase["insert"][INSERT] == 1.0
    assert by_phase["insert"][EXECUTE] == 2.0
    assert by_phase["send"][SEND] == 0.25
    # Shared callees split in proportion to each caller's time in them.
    assert by_phase["insert"][ENCODE] == pytest.approx(0.25)
    assert by_phase["send"][ENCODE] == pytest.approx(0.75)
    # A function under no phase's entry is "the rest".
    assert by_phase[profiling.OTHER] == {SUBMIT: 0.5}
    total = sum(t for funcs in by_phase.values() for t in funcs.values())
    assert total == pytest.approx(0.5 + 1.0 + 0.25 + 2.0 + 1.0)


def test_rows_give_microseconds_per_job_the_database_part_and_the_top_functions():
    rows = profiling.phase_rows(profiling.split_by_phase(stats(), PHASES), PHASES, 1000, 0.5)
    insert = rows[0]
    assert insert[0] == "insert"
    assert insert[1:4] == ["3250", "2000", "1625"]  # profiled, its SQLite part, scaled by 0.5
    assert insert[4].startswith("'execute' of 'sqlite3.Cursor' objects 2000")
    assert [row[0] for row in rows] == ["insert", "send", profiling.OTHER]


def test_a_recursive_function_does_not_loop():
    loop = ("/x/a.py", 1, "walk")
    recursive = {loop: (2, 1, 1.0, 1.0, {loop: (1, 1, 0.5, 0.5)})}
    assert profiling.split_by_phase(recursive, PHASES) == {profiling.OTHER: {loop: 1.0}}
