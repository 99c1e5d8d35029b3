"""Dramatiq as its docs set it up: a Redis broker, the Results middleware on Redis.

Worker: ``dramatiq peer_dramatiq --processes 2 --threads 8``. Runs in the peers'
interpreter only."""

import os
from typing import Any

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.results import Results
from dramatiq.results.backends import RedisBackend

URL = os.environ["GEARATTACH_PEER_REDIS"]
broker = RedisBroker(url=URL)
broker.add_middleware(Results(backend=RedisBackend(url=URL)))
dramatiq.set_broker(broker)


@dramatiq.actor(store_results=True)  # type: ignore[untyped-decorator]
def noop() -> None:
    return None


def submit() -> Any:
    return noop.send()


def wait(message: Any) -> Any:
    return message.get_result(block=True, timeout=60_000)
