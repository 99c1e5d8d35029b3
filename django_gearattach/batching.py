"""One thread hop for many small database calls made in one turn of the event loop.

Async code reaches the database through ``sync_to_async``, a hop to a worker
thread and back. Under load the hops, not the queries, dominate: each one wakes a
thread and contends for the GIL. A :class:`Batcher` gathers the calls made while
the loop runs other coroutines and performs them together in one hop (and, where
the database allows, one statement). While a batch is in the database the next one
gathers, so batches grow with the load instead of queueing up behind each other.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable
from typing import Generic, TypeVar

from asgiref.sync import sync_to_async
from django.db import connections

T = TypeVar("T")
R = TypeVar("R")


def _tidy_connections() -> None:
    """Replace this thread's broken or expired database connections, as a request would.

    The thread that runs the batches lives as long as the process, and nothing else
    tidies its connections (the websocket consumer skips Channels' per-message hop).
    A connection inside a transaction is left alone.
    """
    for conn in connections.all(initialized_only=True):
        if not conn.in_atomic_block:
            conn.close_if_unusable_or_obsolete()


class Batcher(Generic[T, R]):
    """``await batcher(item)`` runs ``func([item, ...])`` for all items of one loop turn.

    ``func`` is synchronous and returns one result (or exception) per item, in order.
    """

    def __init__(self, func: Callable[[list[T]], list[R | BaseException]]) -> None:
        self.func = func
        self._waiting: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, list[tuple[T, asyncio.Future[R]]]
        ] = weakref.WeakKeyDictionary()
        self._busy: weakref.WeakSet[asyncio.AbstractEventLoop] = weakref.WeakSet()

    async def __call__(self, item: T) -> R:
        loop = asyncio.get_running_loop()
        waiting = self._waiting.setdefault(loop, [])
        future: asyncio.Future[R] = loop.create_future()
        if not waiting and loop not in self._busy:
            loop.call_soon(self._launch, loop)
        waiting.append((item, future))
        return await future

    def _in_thread(self, items: list[T]) -> list[R | BaseException]:
        _tidy_connections()
        return self.func(items)

    def _launch(self, loop: asyncio.AbstractEventLoop) -> None:
        batch = self._waiting.pop(loop, [])
        if batch:
            self._busy.add(loop)
            loop.create_task(self._run(loop, batch))

    async def _run(
        self, loop: asyncio.AbstractEventLoop, batch: list[tuple[T, asyncio.Future[R]]]
    ) -> None:
        try:
            results = await sync_to_async(self._in_thread)([item for item, _ in batch])
        except BaseException as exc:  # the whole batch failed: every caller hears why
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        finally:
            self._busy.discard(loop)
            if self._waiting.get(loop):
                loop.call_soon(self._launch, loop)
        for (_, future), result in zip(batch, results, strict=True):
            if future.done():
                continue
            if isinstance(result, BaseException):
                future.set_exception(result)
            else:
                future.set_result(result)
