"""Fixtures for the protocol layer's tests: a real gearmand, raw workers."""

from __future__ import annotations

import pytest

from django_gearattach.gearman.client import Client
from django_gearattach.gearman.rendezvous import Address
from django_gearattach.testing import Gearmand
from tests.rawgearman import TIMEOUT, RawWorker


@pytest.fixture
def address(gearmand: Gearmand) -> Address:
    return Address.parse(gearmand.address)


@pytest.fixture
def client():
    client = Client(timeout=TIMEOUT)
    yield client
    client.close()


@pytest.fixture
def raw_workers():
    started: list[RawWorker] = []

    def start(address: Address, *functions: str) -> RawWorker:
        worker = RawWorker(address, *functions)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.close()
