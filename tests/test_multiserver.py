"""Several gearmand servers: every process routes a key to the same one, with failover."""

from __future__ import annotations

import subprocess
import sys

import pytest

from django_gearattach import attach, submit
from django_gearattach.clients import servers_for
from django_gearattach.gearman.rendezvous import Address, route
from django_gearattach.models import Job, Status
from tests.conftest import ROOT, executions

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def three(gearmand_factory, settings):
    servers = [gearmand_factory() for _ in range(3)]
    settings.GEARATTACH = {**settings.GEARATTACH, "SERVERS": [s.address for s in servers]}
    return servers


def test_each_key_goes_to_its_home_server(three):
    jobs = [submit("tests.add", [i, i]) for i in range(30)]
    homes = {job.server for job in jobs}
    assert len(homes) == 3  # keys spread over every server
    for job in jobs:
        assert job.server == str(servers_for("tests.add", job.key)[0])


def test_another_process_routes_every_key_the_same_way(three):
    keys = [f"key-{i}" for i in range(50)]
    servers = [s.address for s in three]
    code = (
        "import json,sys\n"
        "from django_gearattach.gearman.rendezvous import parse_addresses, route\n"
        "servers = parse_addresses(sys.argv[1].split(','))\n"
        "print(json.dumps([str(route(servers, 'tests.add', k)[0]) for k in sys.argv[2:]]))\n"
    )
    out = subprocess.check_output(
        [sys.executable, "-c", code, ",".join(reversed(servers)), *keys], cwd=ROOT, text=True
    )
    mine = [str(route([Address.parse(s) for s in servers], "tests.add", k)[0]) for k in keys]
    assert out.strip() == str(mine).replace("'", '"')


def test_submission_fails_over_and_attach_follows_the_record(three, worker_factory, log_path):
    key = "failover-key"
    order = servers_for("tests.record", key)
    home = next(s for s in three if s.address == str(order[0]))
    home.stop()
    job = submit("tests.record", [str(log_path)], key=key)
    assert job.server == str(order[1])
    worker_factory(three)  # the worker serves every server it can reach
    events = list(attach("tests.record", key, timeout=30))
    assert events[-1].event == "complete"
    assert len(executions(log_path)) == 1
    assert Job.objects.get(key=key).status == Status.COMPLETE


def keys_homed_on_each(servers, per_server: int) -> list[str]:
    """Keys chosen so that every server is the home of ``per_server`` of them."""
    wanted = {s.address: per_server for s in servers}
    keys, i = [], 0
    while any(wanted.values()):
        key, i = f"spread-{i}", i + 1
        home = str(servers_for("tests.add", key)[0])
        if wanted[home]:
            wanted[home] -= 1
            keys.append(key)
    return keys


def test_workers_take_jobs_from_every_server(three, worker_factory):
    worker_factory(three)
    jobs = [
        submit("tests.add", [i, 1], key=key) for i, key in enumerate(keys_homed_on_each(three, 4))
    ]
    for i, job in enumerate(jobs):
        assert list(attach("tests.add", job.key, timeout=30))[-1].result == i + 1
    assert {j.server for j in jobs} == {s.address for s in three}
