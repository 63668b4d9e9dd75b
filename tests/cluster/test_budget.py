"""The shared admission budget: room in the provider's queue is taken in the intent's fenced transaction,
never past the limit whatever node asks, comes back when a batch ends, and goes to whoever holds least
per unit of weight while others wait."""

from __future__ import annotations

import asyncio

import psycopg
import pytest

from batch_scheduler.state.ledger import budget
from batch_scheduler.state.ledger.postgres import PgLedger
from batch_scheduler.state.ledger.sqlite import ChunkKind

from .helpers import aclaim, queue_job

ACCOUNT = budget.account_of("anthropic", "http://127.0.0.1:1", "sk-test-key")


@pytest.fixture
async def ledgers(pg_url, tmp_path):
    """Three jobs claimed by three nodes, drawing on one pool of 200 requests (weights 1, 1, 2)."""
    out = []
    for i, weight in enumerate((1.0, 1.0, 2.0)):
        await asyncio.to_thread(queue_job, pg_url, f"job-{i}", [], str(tmp_path / str(i)))
        got = await aclaim(pg_url, f"node-{i}")
        led = await asyncio.to_thread(PgLedger, pg_url, got.job_id, got.token, name=got.name)
        led.share = budget.Share(ACCOUNT, budget.REQUESTS_POOL, 200, weight)
        out.append(led)
    with psycopg.connect(pg_url, options="-c search_path=batch_scheduler", autocommit=True) as db:
        budget.set_limit(db, out[0].share)
    yield out
    for led in out:
        await asyncio.to_thread(led.close)


def queued(pg_url: str) -> int:
    with psycopg.connect(pg_url, options="-c search_path=batch_scheduler") as db:
        return budget.queued(db, ACCOUNT)


async def intent(led: PgLedger, n: int = 100) -> int:
    return await led.record_intent(kind=ChunkKind.INPUT, take=n, nbytes=n * 10, root_seq=0)


async def test_room_is_never_given_past_the_limit_and_comes_back_when_a_batch_ends(pg_url, ledgers):
    a, b, _ = ledgers
    first, second = await intent(a), await intent(a)
    assert await asyncio.to_thread(queued, pg_url) == 200
    waiting = asyncio.create_task(intent(b))
    await asyncio.sleep(0.5)
    assert not waiting.done()  # the queue is full: b waits, and no intent of b's is written meanwhile
    assert await asyncio.to_thread(queued, pg_url) == 200
    await a.mark_ended(first, None)  # a batch ended at the provider: its room comes back
    third = await asyncio.wait_for(waiting, 5)
    assert third not in (first, second)
    assert await asyncio.to_thread(queued, pg_url) == 200
    await a.record_intent(kind=ChunkKind.INPUT, take=100, nbytes=1000, chunk_id=second)  # sent again: holds its room
    assert await asyncio.to_thread(queued, pg_url) == 200


async def test_while_others_wait_the_room_goes_to_whoever_holds_least_per_weight(pg_url, ledgers):
    a, b, c = ledgers  # weights 1, 1, 2
    with psycopg.connect(pg_url, options="-c search_path=batch_scheduler", autocommit=True) as db:
        budget.set_limit(db, budget.Share(ACCOUNT, budget.REQUESTS_POOL, 300))
    mine = await intent(a)
    await intent(b)
    await intent(c)  # full: 100 each
    b_wants, c_wants = asyncio.create_task(intent(b)), asyncio.create_task(intent(c))
    await asyncio.sleep(0.5)  # both wait, and have said so
    await a.mark_ended(mine, None)
    done, _ = await asyncio.wait({b_wants, c_wants}, timeout=5, return_when=asyncio.FIRST_COMPLETED)
    assert done == {c_wants}  # c holds 100 for a weight of 2: 50 a unit, less than b's 100
    await asyncio.sleep(0.3)
    assert not b_wants.done()  # and the pool is full again
    b_wants.cancel()
    with pytest.raises(asyncio.CancelledError):
        await b_wants


async def test_a_job_alone_uses_the_whole_pool(pg_url, ledgers):
    a = ledgers[0]
    await intent(a)
    await asyncio.wait_for(intent(a), 2)
    assert await asyncio.to_thread(queued, pg_url) == 200


async def test_teams_share_the_pool_equally_whatever_their_number_of_jobs(pg_url, tmp_path):
    """Team a runs three jobs, team b one: with the pool full and all four wanting more, the room a batch of
    a's gives back goes to b (a holds 200, b 100), not to a's job that holds least (per job, it would)."""
    leds = []
    try:
        for name, team in (("a1", "a"), ("a2", "a"), ("a3", "a"), ("b1", "b")):
            await asyncio.to_thread(queue_job, pg_url, name, [], str(tmp_path / name))
            got = await aclaim(pg_url, f"node-{name}")
            led = await asyncio.to_thread(PgLedger, pg_url, got.job_id, got.token, name=got.name)
            led.share = budget.Share(ACCOUNT, budget.REQUESTS_POOL, 400, 1.0, team)
            leds.append(led)
        with psycopg.connect(pg_url, options="-c search_path=batch_scheduler", autocommit=True) as db:
            budget.set_limit(db, leds[0].share)
        a1, a2, a3, b1 = leds
        first = await intent(a1)
        for led in (a2, a3, b1):
            await intent(led)  # full: 100 each
        wants = {led.name: asyncio.create_task(intent(led)) for led in leds}
        await asyncio.sleep(0.5)  # all four wait, and have said so
        await a1.mark_ended(first, None)
        done, _ = await asyncio.wait(set(wants.values()), timeout=5, return_when=asyncio.FIRST_COMPLETED)
        assert done == {wants["b1"]}
        await asyncio.sleep(0.3)
        assert not wants["a1"].done()  # the pool is full again, and a holds its half
        for task in wants.values():
            task.cancel()
        await asyncio.gather(*wants.values(), return_exceptions=True)
    finally:
        for led in leds:
            await asyncio.to_thread(led.close)


async def test_openai_jobs_share_tokens_enqueued_per_model_each_model_its_own_pool(pg_url, tmp_path):
    leds = []
    try:
        for name in ("m1-a", "m1-b", "m2-a"):
            await asyncio.to_thread(queue_job, pg_url, name, [], str(tmp_path / name))
            got = await aclaim(pg_url, f"node-{name}")
            led = await asyncio.to_thread(PgLedger, pg_url, got.job_id, got.token, name=got.name)
            led.share = budget.Share("openai:acct", budget.TOKENS_POOL, 1_000)
            leds.append(led)
        m1a, m1b, m2a = leds

        async def tokens(led: PgLedger, model: str, units: int) -> int:
            return await led.record_intent(kind=ChunkKind.INPUT, take=10, nbytes=100, root_seq=0, units=units,
                                           queue_key=model)
        first = await tokens(m1a, "gpt-x", 600)
        await tokens(m1a, "gpt-x", 400)  # gpt-x's pool is full: 1,000 tokens
        await asyncio.wait_for(tokens(m2a, "gpt-y", 900), 2)  # another model's pool has room of its own
        waiting = asyncio.create_task(tokens(m1b, "gpt-x", 500))
        await asyncio.sleep(0.5)
        assert not waiting.done()
        with psycopg.connect(pg_url, options="-c search_path=batch_scheduler") as db:
            assert budget.queued(db, "openai:acct", "tokens:gpt-x") == 1_000
            assert budget.queued(db, "openai:acct", "tokens:gpt-y") == 900
        await m1a.mark_ended(first, None)  # 600 tokens come back: room for the 500
        await asyncio.wait_for(waiting, 5)
    finally:
        for led in leds:
            await asyncio.to_thread(led.close)
