"""Every ledger backend keeps the `Ledger` interface and answers alike (the `ledger` fixture: SQLite, then
PostgreSQL)."""

from __future__ import annotations

import asyncio
import time

from batch_scheduler.state.ledger import Ledger
from batch_scheduler.state.ledger.postgres import PgLedger
from batch_scheduler.state.ledger.sqlite import ChunkKind, ChunkState, RetryState, RetryWait, SqliteLedger


def test_both_backends_are_ledgers():
    def typed(led: Ledger) -> Ledger:  # what mypy checks; at run time, every method the interface names
        return led
    for backend in (SqliteLedger, PgLedger):
        missing = [m for m in Ledger.__dict__ if not m.startswith("_") and not hasattr(backend, m)]
        assert missing == [], backend
    assert typed


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



async def test_a_parked_request_waits_longer_after_each_attempt_before_it_is_due(ledger):
    chunk = await ledger.record_intent(kind=ChunkKind.INPUT, root_seq=0, take=3, nbytes=1)
    park = [(cid, b"{}", attempts, RetryState.PENDING, None) for cid, attempts in (("a", 1), ("b", 2), ("c", 5))]
    await ledger.record_collected(chunk, offsets=[0], counts={}, park=park, finals=[],
                                  wait=RetryWait(30.0, 600.0), now=1_000.0)
    assert RetryWait(30.0, 600.0).after(5) == 480.0 and RetryWait(30.0, 100.0).after(5) == 100.0
    assert await ledger.next_retry_at() == 1_030.0
    assert [c for c, _, _ in await ledger.pending_retries(10, now=1_029.0)] == []
    assert [c for c, _, _ in await ledger.pending_retries(10, now=1_030.0)] == ["a"]
    assert [c for c, _, _ in await ledger.pending_retries(10, now=1_060.0)] == ["a", "b"]
    assert [c for c, _, _ in await ledger.pending_retries(10, now=1_480.0)] == ["a", "b", "c"]
    assert await ledger.count_retries(RetryState.PENDING) == 3  # waiting or due, all pending


async def test_an_input_chunk_keeps_its_custom_ids_and_so_do_the_halves_of_a_split(ledger):
    chunk = await ledger.record_intent(kind=ChunkKind.INPUT, root_seq=0, take=4, nbytes=1, ids=["a", "b", "c", "d"])
    retry = await ledger.record_intent(kind=ChunkKind.RETRY, take=1, nbytes=1, retry_ids=["x"])
    assert await ledger.chunk_ids(chunk) == ["a", "b", "c", "d"]
    assert await ledger.chunk_ids(retry) is None  # a retry chunk's requests are rows of `retries`
    left, right = await ledger.record_split(chunk, [(0, 2, 1, ["a", "b"]), (2, 2, 1, ["c", "d"])])
    assert (await ledger.chunk_ids(left), await ledger.chunk_ids(right)) == (["a", "b"], ["c", "d"])
