"""The producer cuts the next chunk while the one before waits to be sent (for room in the queue, a slot)."""

import asyncio

import pytest

from batch_scheduler.job.producer import one_ahead


async def _chunks(log, n, *, fail_after=None):
    try:
        for i in range(n):
            if i == fail_after:
                raise ValueError(f"line {i}: unreadable")
            await asyncio.sleep(0)  # reading and cutting a chunk awaits the reader
            log.append(f"cut {i}")
            yield i
    finally:
        log.append("closed")


async def test_the_next_chunk_is_cut_while_the_one_before_waits_and_no_further():
    log = []
    ahead = one_ahead(_chunks(log, 5))
    assert await anext(ahead) == 0
    await asyncio.sleep(0.01)  # the producer waits for room for chunk 0
    assert log == ["cut 0", "cut 1"]  # chunk 1 is ready; chunk 2 is not read yet
    assert [c async for c in ahead] == [1, 2, 3, 4]
    assert log[-1] == "closed"


async def test_a_cut_that_fails_fails_after_the_chunks_before_it():
    log = []
    got = []
    with pytest.raises(ValueError, match="line 2"):
        async for chunk in one_ahead(_chunks(log, 5, fail_after=2)):
            got.append(chunk)
    assert got == [0, 1]


async def test_a_producer_that_stops_stops_the_cut_ahead_and_closes_the_input():
    log = []
    ahead = one_ahead(_chunks(log, 100))
    assert await anext(ahead) == 0
    await ahead.aclose()
    await asyncio.sleep(0.01)
    assert log[-1] == "closed" and log.count("closed") == 1
    assert len([x for x in log if x.startswith("cut")]) <= 2
