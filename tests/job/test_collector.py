"""Collecting an ended batch: each final line once in the shards, the rest parked for another attempt.

The batches here are retry chunks (their requests are in the ledger, parked by an earlier batch), sent
to the simulator and collected as a run would.
"""

from __future__ import annotations

from contextlib import asynccontextmanager

import orjson

from batch_scheduler.core.http import HttpClient
from batch_scheduler.core.ledger import ChunkKind, ChunkRow, ChunkState, Ledger, RetryState
from batch_scheduler.job.collector import Collector
from batch_scheduler.job.replay import Replay
from batch_scheduler.job.writer import ShardSet
from batch_scheduler.providers.anthropic import AnthropicProvider
from batch_scheduler.providers.base import BatchInfo, BatchState

from ..conftest import fast_settings
from ..helpers import ids_of, read_results, request


class Harness:
    def __init__(self, provider: AnthropicProvider, ledger: Ledger, collector: Collector, shards: int):
        self.provider = provider
        self.ledger = ledger
        self.collector = collector
        self.shards = shards

    async def retry_batch(self, n: int, attempts_before: int, *, cancel: bool = False) -> tuple[ChunkRow, BatchInfo]:
        """n requests parked after `attempts_before` attempts, sent as one retry chunk; its batch, ended."""
        ids = [f"r{i}" for i in range(n)]
        lines = [orjson.dumps(request(cid)) for cid in ids]
        earlier = await self.ledger.record_intent(kind=ChunkKind.INPUT, root_seq=0, take=n, nbytes=1)
        park = [(cid, line, attempts_before, RetryState.PENDING, b"{}") for cid, line in zip(ids, lines, strict=True)]
        await self.ledger.record_collected(earlier, offsets=[0] * self.shards, counts={}, park=park, finals=[])
        chunk_id = await self.ledger.record_intent(kind=ChunkKind.RETRY, take=n, nbytes=1,
                                                   attempt=attempts_before + 1, retry_ids=ids)
        info = await self.provider.create(lines, tag=f"chunk-{chunk_id}")
        await self.ledger.record_submitted(chunk_id, info.id)
        if cancel:
            await self.provider.cancel(info.id)
        while info.state is BatchState.IN_PROGRESS:
            info = await self.provider.get(info.id)
        return await self.ledger.chunk(chunk_id), info


@asynccontextmanager
async def harness(sim, tmp_path, **changes):
    settings = fast_settings(sim.url, **changes)
    tmp_path.mkdir(exist_ok=True)
    ledger = Ledger(str(tmp_path / "ledger.db"))
    shards = ShardSet(str(tmp_path), settings.shards)
    try:
        async with HttpClient(AnthropicProvider.headers(settings), settings.retry, secret=settings.api_key) as http:
            provider = AnthropicProvider(settings, http)
            collector = Collector(provider, ledger, shards, settings, Replay([], provider.check_request, ledger),
                                  lambda model, usage: 0.0)
            yield Harness(provider, ledger, collector, settings.shards)
    finally:
        shards.close()
        ledger.close()


async def test_a_results_download_cut_short_is_fetched_again_and_each_line_is_written_once(sim, tmp_path):
    sim.config.cut_rate = 0.5
    async with harness(sim, tmp_path) as b:
        row, info = await b.retry_batch(300, 1)
        got = await b.collector.collect(row, info)
        assert b.collector.downloads_restarted > 0 and sim.stats["cut_downloads"] > 0
    assert got.finals == 300 and got.parked == 0
    results = read_results(str(tmp_path))
    assert sorted(ids_of(results)) == sorted(f"r{i}" for i in range(300))


async def test_transient_errors_are_parked_until_the_last_attempt_whose_line_is_final(sim, tmp_path):
    sim.config.errored_rate = 1.0
    async with harness(sim, tmp_path / "second", max_attempts=3) as b:
        row, info = await b.retry_batch(20, 1)  # the second attempt of three
        got = await b.collector.collect(row, info)
        assert (got.finals, got.parked) == (0, 20)
        assert await b.ledger.count_retries(RetryState.PENDING) == 20
        assert (await b.ledger.chunk(row.id)).state == ChunkState.COLLECTED
    assert read_results(str(tmp_path / "second")) == []
    async with harness(sim, tmp_path / "last", max_attempts=3) as b:
        row, info = await b.retry_batch(20, 2)  # the last
        got = await b.collector.collect(row, info)
        assert (got.finals, got.parked) == (20, 0)
        assert got.counts["errored"] == 20 and got.counts["final_after_3_attempts"] == 20
        assert await b.ledger.count_retries(RetryState.PENDING) == 0
    assert {r["result"]["type"] for r in read_results(str(tmp_path / "last"))} == {"errored"}


async def test_the_requests_of_a_cancelled_batch_are_parked_as_cancelled_not_written(sim, tmp_path):
    sim.config.processing_s = 30
    async with harness(sim, tmp_path) as b:
        row, info = await b.retry_batch(15, 1, cancel=True)
        got = await b.collector.collect(row, info)
        assert (got.finals, got.parked) == (0, 15) and "canceled" not in got.counts
        assert await b.ledger.count_retries(RetryState.CANCELLED) == 15
    assert read_results(str(tmp_path)) == []
