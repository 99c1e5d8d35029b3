"""``--peers``' table and the issue's targets: ratios and verdicts from given figures."""

from __future__ import annotations

from django_gearattach.bench import peertable
from django_gearattach.bench.peertable import Verdict, fastest_peer, peers_table, verdicts


def figures(rate: float, p50_ms: float, p99_ms: float, cpu=(0.3, 0.4), version=None):
    """200 latencies whose p50 and p99 are the given ones, a row (b) rate and its CPU."""
    a = [p50_ms / 1000] * 150 + [p99_ms / 1000] * 50
    out = {
        "a": a,
        "b": rate,
        "b_cpu": {
            "client_cpu_ms_per_job": cpu[0],
            "worker_cpu_ms_per_job": cpu[1],
            "server_cpu_ms_per_job": 0.2,
        },
    }
    if version:
        out["version"] = version
    return out


def by_target(results) -> dict[str, Verdict]:
    return {v.target: v for v in verdicts(results)}


def test_the_bar_is_the_faster_of_dramatiq_and_huey_not_celery():
    results = {
        peertable.DRAMATIQ: figures(2216, 6.4, 14),
        peertable.HUEY: figures(1709, 1.7, 11.6),
        peertable.CELERY: figures(9000, 12, 47),  # never the bar
    }
    assert fastest_peer(results) == (peertable.DRAMATIQ, 2216)
    assert fastest_peer({peertable.HUEY: figures(1, 1, 1), peertable.DRAMATIQ: None}) == (
        peertable.HUEY,
        1,
    )
    assert fastest_peer({peertable.CELERY: figures(5, 1, 1)}) is None


def test_every_target_not_met_says_so_with_its_ratio():
    results = {
        peertable.SQLITE: figures(429, 5.3, 29.7, cpu=(0.40, 0.62)),
        peertable.DRAMATIQ: figures(2216, 6.4, 14),
        peertable.HUEY: figures(1700, 1.7, 11.6),
        peertable.PG_PREPARED: figures(195, 8.8, 25.6),
    }
    found = by_target(results)
    loop = found["(b) SQLite >= the faster of Dramatiq and Huey"]
    assert loop.met is False
    assert "Dramatiq 2,216" in loop.measured
    assert "0.19x" in loop.measured
    assert found["(b) PG prepared >= 0.67x SQLite"].met is False
    assert "0.45x" in found["(b) PG prepared >= 0.67x SQLite"].measured
    assert found["(a) SQLite p50 <= 2 ms"].met is False
    assert found["(a) SQLite p50 <= Huey's"].met is False
    assert "3.12x" in found["(a) SQLite p50 <= Huey's"].measured
    assert found["(a) SQLite p99 <= 10 ms"].met is False
    cpu = found["CPU per job, client + worker, SQLite <= 0.5 ms"]
    assert (cpu.met, cpu.measured) == (False, "0.40 + 0.62 = 1.02 ms")
    assert cpu.word == "NOT MET"


def test_targets_met_at_their_bounds():
    results = {
        peertable.SQLITE: figures(2000, 1.5, 10.0, cpu=(0.2, 0.3)),
        peertable.DRAMATIQ: figures(1999, 6.4, 14),
        peertable.HUEY: figures(2000, 1.5, 11.6),
        peertable.PG_PREPARED: figures(1340, 1.5, 9.0),
    }
    found = by_target(results)
    assert all(v.met for v in found.values()), [v for v in found.values() if not v.met]
    assert found["(b) PG prepared >= 0.67x SQLite"].word == "met"


def test_a_system_not_run_leaves_its_targets_not_measured():
    results = {
        peertable.SQLITE: figures(500, 1, 5),
        peertable.DRAMATIQ: None,
        peertable.HUEY: None,
    }
    found = by_target(results)
    assert found["(b) SQLite >= the faster of Dramatiq and Huey"].met is None
    assert found["(a) SQLite p50 <= Huey's"].word == "not measured"
    assert found["(a) SQLite p50 <= 2 ms"].met is True
    none = by_target({peertable.SQLITE: None, peertable.PG_DEFAULT: None})
    assert none["CPU per job, client + worker, SQLite <= 0.5 ms"].met is None


def test_the_table_lists_each_system_in_order_with_its_figures_and_the_verdicts():
    results = {
        peertable.SQLITE: figures(430, 5.3, 29.7),
        peertable.DRAMATIQ: figures(2216, 6.4, 14, version="2.2.1"),
        peertable.HUEY: None,
    }
    text = peers_table(results)
    lines = text.splitlines()
    assert lines[0].split()[:2] == ["system", "(b)"]
    sqlite = next(line for line in lines if line.startswith("this app, SQLite"))
    assert "430" in sqlite
    assert "0.19x" in sqlite
    assert "5.30 / 29.70" in sqlite
    assert "0.30 + 0.40" in sqlite
    assert sqlite.split()[-1] == "yes"  # durable
    dramatiq = next(line for line in lines if line.startswith("Dramatiq 2.2.1"))
    assert "2,216" in dramatiq
    assert "1.00x" in dramatiq
    assert dramatiq.split()[-1] == "no"
    assert any(line.startswith("Huey") and "NOT RUN" in line for line in lines)
    assert lines.index(sqlite) < lines.index(dramatiq)
    verdict = next(line for line in lines if line.startswith("(b) SQLite >="))
    assert verdict.endswith("NOT MET")
