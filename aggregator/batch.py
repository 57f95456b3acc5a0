"""Group many small store calls of concurrent polls into one call each (group commit).

A poll that gets a 304 needs two store calls: read the feed's validators, record the
poll. Alone, each is a thread hop and an ORM round trip (about a millisecond or more, under
the GIL the event loop needs), which made the store, not the network, the limit of a
304 round. ``Batcher`` collects the calls concurrent polls make while one batch is in
the store and runs them as the next batch, one thread hop and one transaction for all::

    states = Batcher(repo.feed_states_for)        # [url, ...] -> [state, ...], in order
    state = await states(url)                      # each poll awaits its own answer

Nothing is deferred: a poll still waits until its own call is done (a record is
committed before the poll returns), and an idle poller sends a batch of one at once.
A batch that fails fails every call in it with the same exception.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")

MAX_BATCH = 500


class Batcher(Generic[K, V]):
    """``await batcher(key)``: ``fn(keys)`` answers a batch of keys in order, in a thread."""

    def __init__(
        self, fn: Callable[[Sequence[K]], Sequence[V]], max_batch: int = MAX_BATCH
    ) -> None:
        self._fn = fn
        self._max = max_batch
        self._pending: list[tuple[K, asyncio.Future[V]]] = []
        self._task: asyncio.Task[None] | None = None

    async def __call__(self, key: K) -> V:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[V] = loop.create_future()
        self._pending.append((key, future))
        task = self._task
        # A task of a loop that has gone (asyncio.run called again) will never run.
        if task is None or task.done() or task.get_loop() is not loop:
            self._task = loop.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        while self._pending:
            # Let the polls that are ready this turn add their calls first.
            await asyncio.sleep(0)
            batch, self._pending = self._pending[: self._max], self._pending[self._max :]
            live = [(k, f) for k, f in batch if not f.done()]  # a cancelled poll asks nothing
            if not live:
                continue
            try:
                found = await asyncio.to_thread(self._fn, [k for k, _ in live])
            except Exception as e:
                for _, f in live:
                    if not f.done():
                        f.set_exception(e)
                continue
            for (_, f), value in zip(live, found, strict=True):
                if not f.done():
                    f.set_result(value)
