"""FairSlots: one budget of batches in flight, shared round-robin among the jobs."""

from __future__ import annotations

import asyncio

import pytest

from batch_scheduler.daemon.slots import FairSlots

from .helpers import until

pytestmark = pytest.mark.timeout(20)


async def test_fair_slots_grant_round_robin_among_waiting_jobs():
    grants: list[str] = []
    pool = FairSlots(2, on_grant=grants.append)
    big, small, mid = pool.handle("big"), pool.handle("small"), pool.handle("mid")
    await big.acquire()
    await big.acquire()  # big holds the whole budget
    waiters = [asyncio.create_task(big.acquire()) for _ in range(4)]
    await until(lambda: pool.waiting == 4)
    waiters += [asyncio.create_task(small.acquire()) for _ in range(2)]
    waiters += [asyncio.create_task(mid.acquire()) for _ in range(2)]
    await until(lambda: pool.waiting == 8)
    grants.clear()
    handles = [big, small, mid]
    for _ in range(8):
        await until(lambda: sum(h.held for h in handles) == pool.in_use, "granted acquires returned")
        next(h for h in handles if h.held).release()
    await asyncio.gather(*waiters)
    assert grants == ["big", "small", "mid", "big", "small", "mid", "big", "big"]
    assert pool.in_use == 2 and pool.waiting == 0


async def test_a_job_with_many_batches_waiting_does_not_starve_a_job_with_one():
    grants: list[str] = []
    pool = FairSlots(4, on_grant=grants.append)
    huge, tiny = pool.handle("huge"), pool.handle("tiny")
    for _ in range(4):
        await huge.acquire()
    queued = [asyncio.create_task(huge.acquire()) for _ in range(1000)]
    await until(lambda: pool.waiting == 1000)
    late = asyncio.create_task(tiny.acquire())
    await until(lambda: pool.waiting == 1001)
    grants.clear()
    huge.release()
    huge.release()  # two jobs wait: two freed slots reach both
    await late
    assert sorted(grants) == ["huge", "tiny"]
    for t in queued:
        t.cancel()
    await asyncio.gather(*queued, return_exceptions=True)
    assert pool.waiting == 0


async def test_a_cancelled_wait_and_a_closed_handle_give_their_slots_back():
    pool = FairSlots(2)
    a, b = pool.handle("a"), pool.handle("b")
    await a.acquire()
    await a.acquire()
    waiting = asyncio.create_task(b.acquire())
    await until(lambda: pool.waiting == 1)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert pool.waiting == 0 and pool.in_use == 2
    a.close()  # a run that was stopped or refused still held two slots
    assert pool.in_use == 0 and a.held == 0
    await b.acquire()
    assert pool.in_use == 1


async def test_a_jobs_own_concurrency_caps_its_share_of_the_budget():
    pool = FairSlots(3)
    capped = pool.handle("capped", limit=1)
    await capped.acquire()
    second = asyncio.create_task(capped.acquire())
    await until(lambda: pool.in_use == 1 and not second.done())
    other = pool.handle("other")
    await other.acquire()
    await other.acquire()  # the budget is there for others
    assert pool.in_use == 3 and not second.done()
    capped.release()
    other.release()
    await second
    assert capped.held == 1
