"""Huey as its docs set it up: ``RedisHuey`` with results (and ``notify_result`` where
the installed Huey has it, so a blocking ``get`` is woken rather than polling).

Worker: ``huey_consumer peer_huey.huey -k process -w 2``. Runs in the peers' interpreter
only."""

import inspect
import os
from typing import Any

from huey import RedisHuey
from huey.storage import RedisStorage

URL = os.environ["GEARATTACH_PEER_REDIS"]
# A storage option (RedisHuey passes it on) since Huey 2.5; older Huey polls.
NOTIFY = "notify_result" in inspect.signature(RedisStorage.__init__).parameters
options = {"notify_result": True} if NOTIFY else {}
# store_none: Huey keeps no result for a task that returns None, and a blocking get()
# would then wait for ever; the app's no-op job stores its None outcome too.
huey = RedisHuey("gearattach-bench", url=URL, results=True, store_none=True, **options)


@huey.task()  # type: ignore[untyped-decorator]
def noop() -> None:
    return None


def submit() -> Any:
    return noop()


def wait(result: Any) -> Any:
    return result.get(blocking=True, timeout=60)
