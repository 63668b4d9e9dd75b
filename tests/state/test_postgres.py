"""The PostgreSQL ledger fences a claim that is gone, marks the batches of a stale node nobody's, and shares
what one job learned of an account's queues."""

from __future__ import annotations

import asyncio

import psycopg
import pytest

from batch_scheduler.cluster.queue import Queue
from batch_scheduler.core import errors
from batch_scheduler.state.ledger.postgres import PgLedger
from batch_scheduler.state.ledger.sqlite import ChunkKind, ChunkState
from tests.cluster.helpers import aclaim, queue_job


async def test_a_batch_a_stale_node_made_is_nobodys_unless_the_new_owner_adopted_it(pg_url, tmp_path):
    await asyncio.to_thread(queue_job, pg_url, "job-1", [], str(tmp_path))
    first = await aclaim(pg_url, "node-a", lease_s=0.5)
    old = await asyncio.to_thread(PgLedger, pg_url, first.job_id, first.token, name="job-1")
    a = await old.record_intent(kind=ChunkKind.INPUT, root_seq=0, take=1, nbytes=10)
    b = await old.record_intent(kind=ChunkKind.INPUT, root_seq=1, take=1, nbytes=10)
    await asyncio.sleep(0.6)
    second = await aclaim(pg_url, "node-b", lease_s=60)
    new = await asyncio.to_thread(PgLedger, pg_url, second.job_id, second.token)
    try:
        await new.record_submitted(a, "batch-adopted", adopted=True)  # the new owner found this one first
        with pytest.raises(errors.LeaseLost):
            await old.record_submitted(a, "batch-adopted")
        assert not await old.record_orphan("batch-adopted")  # adopted: it is collected, not cancelled
        with pytest.raises(errors.LeaseLost):
            await old.record_submitted(b, "batch-late")
        assert await old.record_orphan("batch-late")  # nobody's: the stale node cancels it
        assert await new.claimed_batch_ids() == {"batch-adopted", "batch-late"}  # never adopted from now on
        with pytest.raises(errors.Conflict):
            await new.record_submitted(b, "batch-late", adopted=True)  # an adoption that looked just before
        assert (await new.chunk(b)).batch_id is None
    finally:
        await asyncio.to_thread(old.close)
        await asyncio.to_thread(new.close)


async def test_a_claim_taken_over_writes_nothing_more_and_says_so(pg_url, tmp_path):
    await asyncio.to_thread(queue_job, pg_url, "job-1", [], str(tmp_path))
    first = await aclaim(pg_url, "node-a", lease_s=0.5)
    old = await asyncio.to_thread(PgLedger, pg_url, first.job_id, first.token, name="job-1")
    try:
        a = await old.record_intent(kind=ChunkKind.INPUT, root_seq=0, take=1, nbytes=10)
        await asyncio.sleep(0.6)  # the lease (database clock) runs out; another node claims the orphan
        second = await aclaim(pg_url, "node-b", lease_s=60)
        assert second.job_id == first.job_id and second.claims == 2
        with pytest.raises(errors.LeaseLost) as lost:
            await old.record_submitted(a, "batch-late")
        assert str(lost.value) == ("job job-1: this node's claim is gone (its lease ran out or another node "
                                   "claimed the job); dropping it")
        with pytest.raises(errors.LeaseLost):
            await old.add_counts({"succeeded": 1})
        new = await asyncio.to_thread(PgLedger, pg_url, second.job_id, second.token)
        try:
            assert (await new.chunk(a)).state == ChunkState.SUBMITTING  # the late batch id never landed
            assert await new.claimed_batch_ids() == set()
        finally:
            await asyncio.to_thread(new.close)
    finally:
        await asyncio.to_thread(old.close)


async def test_an_expired_lease_fences_even_before_anyone_claims(pg_url, tmp_path):
    await asyncio.to_thread(queue_job, pg_url, "job-1", [], str(tmp_path))
    got = await aclaim(pg_url, lease_s=0.3)
    led = await asyncio.to_thread(PgLedger, pg_url, got.job_id, got.token)
    try:
        await led.add_counts({"x": 1})
        await asyncio.sleep(0.4)
        with pytest.raises(errors.LeaseLost):
            await led.add_counts({"x": 1})
        assert led.fenced
    finally:
        await asyncio.to_thread(led.close)


async def test_two_nodes_claiming_at_once_get_different_jobs(pg_url, tmp_path):
    for i in range(2):
        await asyncio.to_thread(queue_job, pg_url, f"job-{i}", [], str(tmp_path / str(i)))
    a, b = await asyncio.gather(aclaim(pg_url, "node-a"), aclaim(pg_url, "node-b"))
    assert {a.name, b.name} == {"job-0", "job-1"}
    q = Queue(pg_url)
    try:
        assert await q.claim("node-c", 60) is None  # both held: nothing left
        assert (await q.renew(a.job_id, b.token, 60)) == (False, False)  # another claim's token renews nothing
        assert (await q.renew(a.job_id, a.token, 60)) == (True, False)
    finally:
        await asyncio.to_thread(q.close)


async def test_a_server_gone_mid_job_is_ledger_unavailable_naming_host_and_port(pg_server, tmp_path):
    url = pg_server.new_database()
    await asyncio.to_thread(queue_job, url, "job-1", [], str(tmp_path))
    got = await aclaim(url)
    led = await asyncio.to_thread(PgLedger, url, got.job_id, got.token)
    try:
        with psycopg.connect(pg_server.url(), autocommit=True) as admin:  # the server drops our connection
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s"
                          " AND pid <> pg_backend_pid()", (url.rsplit("/", 1)[1],))
        with pytest.raises(errors.LedgerUnavailable) as err:
            await led.add_counts({"x": 1})
        assert str(err.value).startswith(f"PostgreSQL at 127.0.0.1:{pg_server.port} cannot be reached: ")
    finally:
        await asyncio.to_thread(led.close)


async def test_what_one_job_learns_of_an_accounts_queue_is_where_the_next_job_of_it_starts(pg_url, tmp_path):
    leds = []
    try:
        for name, account in (("first", "anthropic:acct"), ("second", "anthropic:acct"), ("other", "anthropic:x")):
            await asyncio.to_thread(queue_job, pg_url, name, [], str(tmp_path / name))
            got = await aclaim(pg_url, f"node-{name}")
            led = await asyncio.to_thread(PgLedger, pg_url, got.job_id, got.token, name=name)
            led.account = account
            leds.append(led)
        first, second, other = leds
        assert await asyncio.to_thread(second.read_queue_limits) is None
        a = await first.record_intent(kind=ChunkKind.INPUT, root_seq=0, take=1, nbytes=10)
        doc = {"requests": {"confirmed": 300, "ceiling": 400, "refused_at": 1.0, "stated": 400, "queue_full": 1}}
        await first.record_queue_full(a, "queue full", counter="queue_full", limits=doc)
        assert await asyncio.to_thread(second.read_queue_limits) == doc  # another job, maybe another node
        assert await asyncio.to_thread(other.read_queue_limits) is None  # another account learns nothing of it
        assert (await asyncio.to_thread(first.read_meta))["queue_limits"] == doc  # and the job keeps its own
    finally:
        for led in leds:
            await asyncio.to_thread(led.close)
