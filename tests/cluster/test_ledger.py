"""The PostgreSQL ledger keeps the SQLite ledger's interface and answers, and fences a claim that is gone."""

from __future__ import annotations

import asyncio
import time

import psycopg
import pytest

from batch_scheduler.cluster.queue import Queue
from batch_scheduler.core import errors
from batch_scheduler.state.postgres import PgLedger
from batch_scheduler.state.sqlite import ChunkKind, ChunkState, Ledger, RetryState, RetryWait

from .helpers import aclaim, queue_job


@pytest.fixture(params=["sqlite", "postgresql"])
async def ledger(request, tmp_path):
    if request.param == "sqlite":
        led = Ledger(str(tmp_path / "ledger.db"))
    else:
        url = request.getfixturevalue("pg_url")
        await asyncio.to_thread(queue_job, url, "job-1", [], str(tmp_path / "out"))
        got = await aclaim(url)
        led = await asyncio.to_thread(PgLedger, url, got.job_id, got.token, name="job-1")
    yield led
    await asyncio.to_thread(led.close)


async def test_both_ledgers_answer_alike_through_a_chunks_life(ledger):
    await asyncio.to_thread(ledger.write_meta, {"inputs": [{"path": "/x"}], "version": 1})
    assert await asyncio.to_thread(ledger.read_meta) == {"inputs": [{"path": "/x"}], "version": 1}
    a = await ledger.record_intent(kind=ChunkKind.INPUT, root_seq=0, take=3, nbytes=300, span=(0, 0, 1, 0, 90),
                                   est_cost=0.5, skipped=[(0, 2)])
    b = await ledger.record_intent(kind=ChunkKind.INPUT, root_seq=1, take=2, nbytes=200, span=(0, 90, 4, 0, 150))
    await ledger.record_submitted(a, "batch-a")
    assert [r.state for r in await ledger.chunks_in(ChunkState.SUBMITTING)] == [ChunkState.SUBMITTING]
    assert (await ledger.chunk(a)).batch_id == "batch-a"
    assert (await ledger.chunk(a)).skipped_lines() == {(0, 2)}
    assert await ledger.claimed_batch_ids() == {"batch-a"}
    await ledger.record_collected(a, offsets=[10, 20], counts={"succeeded": 2, "cost_usd": 0.25},
                                  park=[("r-3", b'{"custom_id":"r-3"}', 1, RetryState.PENDING, b"{}")], finals=[],
                                  objects=[("results/x-000001-shard-00000.jsonl", 0, 10, 1)])
    assert await ledger.shard_offsets(2) == [10, 20]
    assert await asyncio.to_thread(ledger.counters) == {"succeeded": 2, "cost_usd": 0.25}
    assert await ledger.pending_retries(10) == [("r-3", b'{"custom_id":"r-3"}', 1)]
    r = await ledger.record_intent(kind=ChunkKind.RETRY, take=1, nbytes=40, attempt=2, retry_ids=["r-3"])
    assert await ledger.retry_requests(r) == [("r-3", b'{"custom_id":"r-3"}', 1)]
    halves = await ledger.record_split(b, [(0, 1, 100, ["x"]), (1, 1, 100, ["y"])])
    assert [c.state for c in await ledger.chunks_of_root(1)] == [ChunkState.SPLIT, ChunkState.PLANNED,
                                                                 ChunkState.PLANNED]
    assert [c.id for c in await ledger.chunks_of_root(1)][1:] == halves
    await ledger.record_api_rejected(1, "y", "bad request")
    assert await ledger.api_rejected(1) == {"y": "bad request"}
    await ledger.record_failed(r, park=[("r-3", b'{"custom_id":"r-3"}', 2, RetryState.FAILED, b"{}")], note="gone")
    assert await ledger.count_retries(RetryState.FAILED) == 1
    assert await ledger.requeue(RetryState.FAILED) == 1
    assert await asyncio.to_thread(ledger.retry_counts) == {RetryState.PENDING: 1}
    assert (await asyncio.to_thread(ledger.counters))["batches_failed"] == 1
    assert await asyncio.to_thread(ledger.result_objects) == ["results/x-000001-shard-00000.jsonl"]
    assert not await ledger.is_cancelled()
    await ledger.set_cancelled(True)
    assert await ledger.is_cancelled()


async def test_both_ledgers_keep_digests_ids_and_retry_waits_alike(ledger):
    a = await ledger.record_intent(kind=ChunkKind.INPUT, root_seq=0, take=2, nbytes=100, span=(0, 0, 1, 0, 50),
                                   digest="d0", ids=["x", "y"], units=2, queue_key="requests")
    row = await ledger.chunk(a)
    assert (row.digest, row.units, row.queue_key) == ("d0", 2, "requests")
    assert await ledger.chunk_ids(a) == ["x", "y"]
    halves = await ledger.record_split(a, [(0, 1, 50, ["x"]), (1, 1, 50, ["y"])])
    assert [await ledger.chunk_ids(h) for h in halves] == [["x"], ["y"]]
    assert {(await ledger.chunk(h)).digest for h in halves} == {"d0"}
    await ledger.record_submitted(halves[0], "batch-x")
    assert await asyncio.to_thread(ledger.batch_ids_since, 0.0) == {"batch-x"}
    assert await asyncio.to_thread(ledger.batch_ids_since, time.time() + 60) == set()
    await ledger.record_collected(halves[0], offsets=[7], counts={"succeeded": 0},
                                  park=[("x", b'{"custom_id":"x"}', 2, RetryState.PENDING, None)], finals=[],
                                  wait=RetryWait(10.0, 600.0), now=1000.0)
    assert await ledger.next_retry_at() == 1000.0 + 20.0  # 10 s after the first attempt, doubled after the second
    assert await ledger.pending_retries(10, now=1019.0) == []
    assert await ledger.pending_retries(10, now=1021.0) == [("x", b'{"custom_id":"x"}', 2)]
    assert await asyncio.to_thread(ledger.read_shard_offsets, 1) == [7]
    await ledger.record_api_rejected(0, "y", "bad")
    assert await asyncio.to_thread(ledger.read_api_rejected) == {"y": "bad"}
    r = await ledger.record_intent(kind=ChunkKind.RETRY, take=1, nbytes=40, attempt=3, retry_ids=["x"])
    await ledger.record_collected(r, offsets=[9], counts={"succeeded": 1}, park=[], finals=["x"])
    seen: list[tuple[str, int]] = []
    await asyncio.to_thread(ledger.each_retried_final, lambda cid, n: seen.append((cid, n)))
    assert seen == [("x", 2)]


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
