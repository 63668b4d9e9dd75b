"""The collector's lock: handed over in the order batches came, the next one's download opened at the commit."""

import asyncio

from batch_scheduler.job.collect.early import Turns


def _download(name, log):
    async def blocks():
        log.append(f"{name} opened")
        try:
            yield [f"{name}-1".encode()]
            yield [f"{name}-2".encode()]
        finally:
            log.append(f"{name} closed")
    return blocks


async def test_the_lock_goes_in_arrival_order_and_only_the_next_in_line_opens_its_download_at_the_commit():
    turns, log, order = Turns(), [], []
    assert await turns.acquire(_download("a", log)) is None  # free: taken at once, nothing opened

    async def batch(name):
        early = await turns.acquire(_download(name, log))
        order.append(name)
        got = [b async for b in early.blocks()] if early is not None else None
        turns.release()
        return got

    tasks = [asyncio.create_task(batch(n)) for n in "bcd"]
    await asyncio.sleep(0)
    turns.committing()  # a's commit begins: b (next in line) opens its download, c and d wait
    await asyncio.sleep(0.01)
    assert log == ["b opened"]
    turns.release()
    assert await asyncio.gather(*tasks) == [[[b"b-1"], [b"b-2"]], None, None]
    assert order == ["b", "c", "d"]


async def test_a_batch_cancelled_while_it_waits_leaves_the_line_and_closes_the_download_it_opened():
    turns, log = Turns(), []
    await turns.acquire(None)
    waiting = asyncio.create_task(turns.acquire(_download("b", log)))
    after = asyncio.create_task(turns.acquire(_download("c", log)))
    await asyncio.sleep(0)
    turns.committing()
    await asyncio.sleep(0.01)
    waiting.cancel()
    await asyncio.gather(waiting, return_exceptions=True)
    assert log == ["b opened", "b closed"]
    turns.release()
    assert await after is None  # the lock went on to the next one
    turns.release()
    assert await turns.acquire(None) is None  # and is free again after it


async def test_a_batch_cancelled_as_the_lock_was_handed_to_it_passes_it_on():
    turns = Turns()
    await turns.acquire(None)
    first = asyncio.create_task(turns.acquire(None))
    second = asyncio.create_task(turns.acquire(None))
    await asyncio.sleep(0)
    turns.release()  # handed to `first`, which is cancelled before it runs
    first.cancel()
    await asyncio.gather(first, return_exceptions=True)
    assert await asyncio.wait_for(second, 1) is None


async def test_a_batch_cancelled_while_the_lock_passes_over_it_is_not_looked_for_again():
    """A waiter cancelled and passed over by a release before its task ran again: it leaves without an error,
    closes what it opened, and the lock is with the next one."""
    turns, log = Turns(), []
    await turns.acquire(None)
    cancelled = asyncio.create_task(turns.acquire(_download("b", log)))
    after = asyncio.create_task(turns.acquire(None))
    await asyncio.sleep(0)
    turns.committing()
    await asyncio.sleep(0.01)
    cancelled.cancel()  # its turn is cancelled now; its task runs its handler only later
    turns.release()  # passes over it, to `after`
    results = await asyncio.gather(cancelled, after, return_exceptions=True)
    assert isinstance(results[0], asyncio.CancelledError) and results[1] is None
    assert log == ["b opened", "b closed"]
