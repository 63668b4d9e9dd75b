"""Collecting an ended batch: each final line once in the shards, the rest parked for another attempt.

The batches here are retry chunks (their requests are in the ledger, parked by an earlier batch), sent
to the simulator and collected as a run would.
"""

from __future__ import annotations

import time
from contextlib import asynccontextmanager

import orjson
import pytest
from aioresponses import aioresponses

from batch_scheduler.core import errors
from batch_scheduler.core.http import HttpClient
from batch_scheduler.job.collect.collector import Collector
from batch_scheduler.job.input.replay import Replay
from batch_scheduler.providers.anthropic.provider import AnthropicProvider
from batch_scheduler.providers.base import BatchInfo, BatchState
from batch_scheduler.state.ledger.sqlite import ChunkKind, ChunkRow, ChunkState, Ledger, RetryState
from batch_scheduler.state.shards import ShardSet

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
async def harness(sim, tmp_path, clock=time.monotonic, **changes):
    settings = fast_settings(sim.url, **changes)
    tmp_path.mkdir(exist_ok=True)
    ledger = Ledger(str(tmp_path / "ledger.db"))
    shards = ShardSet(str(tmp_path), settings.shards)
    try:
        async with HttpClient(AnthropicProvider.headers(settings), settings.retry, secret=settings.api_key) as http:
            provider = AnthropicProvider(settings, http)
            collector = Collector(provider, ledger, shards, settings, Replay([], provider.check_request, ledger),
                                  lambda model, usage, columns=None: 0.0, clock=clock)
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
    sim.config.errored_rate = 1.0  # unbilled answers (no usage): --max-unbilled-attempts decides
    async with harness(sim, tmp_path / "second", max_attempts=2, max_unbilled_attempts=3) as b:
        row, info = await b.retry_batch(20, 1)  # the second attempt of three
        got = await b.collector.collect(row, info)
        assert (got.finals, got.parked) == (0, 20)
        assert await b.ledger.count_retries(RetryState.PENDING) == 20
        assert (await b.ledger.chunk(row.id)).state == ChunkState.COLLECTED
    assert read_results(str(tmp_path / "second")) == []
    async with harness(sim, tmp_path / "last", max_attempts=2, max_unbilled_attempts=3) as b:
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


# -- completeness: one final line per request the batch carried ------------------------------------

def succeeded(cid: str, text: str) -> bytes:
    return orjson.dumps({"custom_id": cid, "result": {"type": "succeeded", "message": {
        "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
        "content": [{"type": "text", "text": text}], "stop_reason": "end_turn",
        "usage": {"input_tokens": 3, "output_tokens": 2}}}})


def overloaded(cid: str) -> bytes:
    return orjson.dumps({"custom_id": cid, "result": {"type": "errored", "error": {
        "type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}}})


async def test_repeated_and_foreign_result_lines_are_ignored_and_counted_and_a_missing_request_is_parked(
        sim, tmp_path):
    async with harness(sim, tmp_path) as b:
        row, info = await b.retry_batch(5, 1)  # r0..r4, their second attempt
        answers = [succeeded("r0", "first"), succeeded("r1", "one"), succeeded("r0", "again"),
                   succeeded("someone-else", "not ours"), succeeded("r2", "two"), overloaded("r3")]  # r4: none
        with aioresponses() as m:  # answers the simulator cannot give: a gateway's bugs
            m.get(f"{sim.url}/v1/messages/batches/{info.id}/results", status=200, body=b"\n".join(answers) + b"\n")
            got = await b.collector.collect(row, info)
        assert (got.finals, got.parked) == (3, 2)
        assert got.counts["results_repeated"] == 1 and got.counts["results_foreign"] == 1
        assert got.counts["missing_from_results"] == 1 and got.counts["retried"] == 2
        parked = b.ledger.sync(lambda db: db.execute(
            "SELECT custom_id, attempts, state, last_line IS NULL FROM retries WHERE custom_id IN ('r3', 'r4')"
            " ORDER BY custom_id").fetchall())
        assert parked == [("r3", 2, "pending", 0), ("r4", 2, "pending", 1)]
    results = read_results(str(tmp_path))
    assert sorted(ids_of(results)) == ["r0", "r1", "r2"]
    assert [r["result"]["message"]["content"][0]["text"] for r in results if r["custom_id"] == "r0"] == ["first"]


async def test_a_request_missing_on_its_last_unbilled_attempt_waits_failed_for_the_next_run(sim, tmp_path):
    async with harness(sim, tmp_path, max_attempts=2, max_unbilled_attempts=2) as b:
        row, info = await b.retry_batch(2, 1)  # the second and last attempt
        with aioresponses() as m:
            m.get(f"{sim.url}/v1/messages/batches/{info.id}/results", status=200, body=succeeded("r0", "x") + b"\n")
            got = await b.collector.collect(row, info)
        assert (got.finals, got.parked) == (1, 1)
        assert await b.ledger.count_retries(RetryState.FAILED) == 1  # never written: there is no line for it


async def test_a_results_404_right_after_the_batch_ended_is_tried_again(sim, tmp_path):
    async with harness(sim, tmp_path) as b:
        row, info = await b.retry_batch(10, 1)
        url = f"{sim.url}/v1/messages/batches/{info.id}/results"
        with aioresponses() as m:
            m.get(url, status=404, body=b'{"type":"error","error":{"type":"not_found_error","message":"no"}}')
            m.get(url, status=404, body=b'{"type":"error","error":{"type":"not_found_error","message":"no"}}')
            m.get(url, status=200, body=b"\n".join(succeeded(f"r{i}", "x") for i in range(10)) + b"\n")
            got = await b.collector.collect(row, info)
        assert got.finals == 10 and b.collector.results_not_found == 2


async def test_results_answering_404_past_the_grace_stop_the_run_naming_the_batch(sim, tmp_path):
    async with harness(sim, tmp_path, clock=iter(range(1000)).__next__, not_found_grace_s=2) as b:  # 1 s a look
        row, info = await b.retry_batch(10, 1)
        url = f"{sim.url}/v1/messages/batches/{info.id}/results"
        with aioresponses() as m:
            m.get(url, status=404, body=b"{}", repeat=True)
            with pytest.raises(errors.BatchVanished) as err:
                await b.collector.collect(row, info)
    assert str(err.value) == (f"batch {info.id}: its results answered 404 not_found_error for more than 2 s "
                              f"(--not-found-grace) since its create or its last answer; the ledger keeps the batch: "
                              f"run the same command again to look for it again")
    assert read_results(str(tmp_path)) == []


async def test_a_billed_transient_answer_is_final_at_max_attempts_an_unbilled_one_gets_more(tmp_path):
    from batch_scheduler.providers.openai.provider import OpenAIProvider
    settings = fast_settings("http://openai.test", provider="openai", auth="bearer", max_attempts=2,
                             max_unbilled_attempts=5)
    ledger = Ledger(str(tmp_path / "ledger.db"))
    shards = ShardSet(str(tmp_path), settings.shards)
    try:
        ids = ["billed", "free"]
        earlier = await ledger.record_intent(kind=ChunkKind.INPUT, root_seq=0, take=2, nbytes=1)
        await ledger.record_collected(earlier, offsets=[0] * settings.shards, counts={}, finals=[],
                                      park=[(cid, b"{}", 1, RetryState.PENDING, b"{}") for cid in ids])
        chunk_id = await ledger.record_intent(kind=ChunkKind.RETRY, take=2, nbytes=1, attempt=2, retry_ids=ids)
        await ledger.record_submitted(chunk_id, "batch_1")
        lines = [orjson.dumps({"id": "1", "custom_id": "billed", "error": None, "response": {
                     "status_code": 500, "request_id": "r", "body": {"usage": {"prompt_tokens": 5}}}}),
                 orjson.dumps({"id": "2", "custom_id": "free", "response": None, "error": {
                     "code": "request_timeout", "message": "The underlying call to the model timed out."}})]
        async with HttpClient(OpenAIProvider.headers(settings), settings.retry, secret=settings.api_key) as http:
            provider = OpenAIProvider(settings, http)
            collector = Collector(provider, ledger, shards, settings, Replay([], provider.check_request, ledger),
                                  lambda model, usage, columns=None: 0.0)
            with aioresponses() as m:
                m.get("http://openai.test/v1/files/file-err/content", status=200, body=b"\n".join(lines) + b"\n")
                got = await collector.collect(await ledger.chunk(chunk_id),
                                              BatchInfo("batch_1", BatchState.ENDED, results=["file-err"]))
        assert (got.finals, got.parked) == (1, 1)
        assert [c for c, _, _ in await ledger.pending_retries(10)] == ["free"]
    finally:
        shards.close()
        ledger.close()
    assert ids_of(read_results(str(tmp_path))) == ["billed"]


def test_the_first_retry_wait_follows_a_turnaround_faster_than_retry_wait():
    from batch_scheduler.job.collect.collector import RETRY_WAIT_MIN_S, retry_wait

    settings = fast_settings("http://127.0.0.1:9", retry_wait_s=10.0)
    assert retry_wait(settings).after(1) == 10.0  # no turnaround seen yet: --retry-wait
    assert retry_wait(settings, 3600.0).after(1) == 10.0  # batches that take an hour: --retry-wait
    assert retry_wait(settings, 2.5).after(1) == 2.5  # batches back in 2.5 s: one round trip
    assert retry_wait(settings, 2.5).after(3) == 10.0  # doubling from there
    assert retry_wait(settings, 0.01).after(1) == RETRY_WAIT_MIN_S  # never less than the floor
    given = fast_settings("http://127.0.0.1:9", retry_wait_s=600.0)
    assert retry_wait(given, 2.5).after(1) == 600.0  # a --retry-wait the user gave is kept
