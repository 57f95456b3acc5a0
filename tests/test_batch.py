"""Batcher: concurrent calls share one batch; each gets its own answer or the batch's error."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from aggregator.batch import Batcher


def test_concurrent_calls_go_in_one_batch_and_get_their_own_answers() -> None:
    batches: list[list[int]] = []

    def square(keys: Sequence[int]) -> list[int]:
        batches.append(list(keys))
        return [k * k for k in keys]

    async def run() -> list[int]:
        b = Batcher(square)
        return list(await asyncio.gather(*(b(k) for k in range(10))))

    assert asyncio.run(run()) == [k * k for k in range(10)]
    assert batches == [list(range(10))]


def test_calls_made_while_a_batch_runs_form_the_next_batch() -> None:
    batches: list[list[int]] = []

    def record(keys: Sequence[int]) -> list[int]:
        batches.append(list(keys))
        return list(keys)

    async def run() -> None:
        b = Batcher(record, max_batch=3)
        first = [asyncio.ensure_future(b(k)) for k in range(5)]
        await asyncio.sleep(0)
        later = [asyncio.ensure_future(b(k)) for k in range(5, 7)]
        assert await asyncio.gather(*first, *later) == list(range(7))

    asyncio.run(run())
    assert sorted(sum(batches, [])) == list(range(7))
    assert all(len(x) <= 3 for x in batches) and len(batches) < 7


def test_a_failed_batch_fails_each_call_and_the_next_batch_runs() -> None:
    def fail_on_13(keys: Sequence[int]) -> list[int]:
        if 13 in keys:
            raise RuntimeError("store down")
        return list(keys)

    async def run() -> int:
        b = Batcher(fail_on_13)
        results = await asyncio.gather(b(1), b(13), return_exceptions=True)
        assert all(isinstance(r, RuntimeError) for r in results)
        return await b(2)

    assert asyncio.run(run()) == 2


def test_a_batcher_outlives_its_event_loop() -> None:
    b = Batcher(lambda keys: list(keys))
    assert asyncio.run(b(1)) == 1
    assert asyncio.run(b(2)) == 2  # a second asyncio.run, as the CLI does


def test_a_cancelled_call_is_left_out() -> None:
    seen: list[list[int]] = []

    def record(keys: Sequence[int]) -> list[int]:
        seen.append(list(keys))
        return list(keys)

    async def run() -> int:
        b = Batcher(record)
        gone = asyncio.ensure_future(b(1))
        kept = asyncio.ensure_future(b(2))
        await asyncio.sleep(0)
        gone.cancel()
        with pytest.raises(asyncio.CancelledError):
            await gone
        return await kept

    assert asyncio.run(run()) == 2
    assert seen == [[2]]
