"""Adoption of lost creates: which batch at the provider may be the one a create whose answer was lost made.

A lost create is played by creating the batch with the provider and dropping the answer: the chunk stays
`submitting` in the ledger, exactly as after a dropped connection.
"""

from __future__ import annotations

import asyncio
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass

import orjson
import pytest
from aioresponses import aioresponses

from batch_scheduler.core import errors
from batch_scheduler.core.http import HttpClient
from batch_scheduler.job.engine import Engine, ExitCode
from batch_scheduler.job.input.validate import Rejects
from batch_scheduler.job.send.submitter import JOB_TOKEN_KEY, Outgoing, Submitter
from batch_scheduler.providers import headers_for, make_provider
from batch_scheduler.providers.base import Provider
from batch_scheduler.state.ledger.sqlite import ChunkKind, Ledger

from ..conftest import fast_settings
from ..helpers import ids_of, read_results, request, write_requests


def lines_for(provider: str, n: int, prefix: str) -> list[bytes]:
    if provider == "anthropic":
        return [orjson.dumps(request(f"{prefix}-{i}")) for i in range(n)]
    return [orjson.dumps({"custom_id": f"{prefix}-{i}", "method": "POST", "url": "/v1/chat/completions",
                          "body": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}})
            for i in range(n)]


@dataclass
class Job:
    provider: Provider
    ledger: Ledger
    submitter: Submitter

    async def lost_create(self, n: int, prefix: str) -> tuple[int, float]:
        """Record an intent, create its batch and lose the answer: (chunk id, intent time)."""
        chunk_id = await self.ledger.record_intent(kind="input", root_seq=0, take=n, nbytes=1_000)
        intent_at = time.time() - 0.5  # the intent comes before the batch, whatever the clock's resolution
        await self.provider.create(lines_for(self.provider.name, n, prefix), tag=self.submitter.tag(chunk_id))
        return chunk_id, intent_at


@asynccontextmanager
async def job(url: str, ledger_path, provider: str = "openai", **submitter_args):
    settings = fast_settings(url, provider=provider, auth="bearer" if provider == "openai" else "x-api-key")
    ledger = Ledger(str(ledger_path))
    try:
        async with HttpClient(headers_for(settings), settings.retry, secret=settings.api_key) as http:
            p = make_provider(settings, http)
            yield Job(p, ledger, Submitter(p, ledger, Rejects(None, []), overhead=p.body_overhead,
                                           **submitter_args))
    finally:
        ledger.close()


async def test_a_foreign_openai_batch_with_our_request_count_but_another_jobs_tag_is_not_adopted(sim, tmp_path):
    async with job(sim.url, tmp_path / "ours.db") as ours, job(sim.url, tmp_path / "theirs.db") as theirs:
        chunk_id = await ours.ledger.record_intent(kind="input", root_seq=0, take=3, nbytes=1_000)
        intent_at = time.time() - 0.5
        their_chunk, _ = await theirs.lost_create(3, "theirs")
        assert their_chunk == chunk_id  # both jobs number their chunks from 1: only the job tells them apart
        assert await ours.submitter.adopt(chunk_id, 3, intent_at) is None
        assert await ours.ledger.claimed_batch_ids() == set()


async def test_our_openai_batch_is_adopted_by_its_tag_though_another_jobs_came_nearer_the_intent(sim, tmp_path):
    async with job(sim.url, tmp_path / "ours.db") as ours, job(sim.url, tmp_path / "theirs.db") as theirs:
        chunk_id, intent_at = await ours.lost_create(3, "ours")
        await theirs.lost_create(3, "theirs")  # created later: first in the list, as near in time
        info = await ours.submitter.adopt(chunk_id, 3, intent_at)
        assert info is not None and ours.provider.tag_of(info) == ours.submitter.tag(chunk_id)
        assert await ours.ledger.claimed_batch_ids() == {info.id}
        theirs_info = await theirs.submitter.adopt(chunk_id, 3, intent_at)
        assert theirs_info is not None and theirs_info.id != info.id


async def test_a_batch_of_another_chunk_of_the_same_job_is_not_adopted(sim, tmp_path):
    async with job(sim.url, tmp_path / "ours.db") as ours:
        first, intent_at = await ours.lost_create(3, "a")
        second = await ours.ledger.record_intent(kind="input", root_seq=1, take=3, nbytes=1_000)
        assert await ours.submitter.adopt(second, 3, intent_at) is None
        assert await ours.submitter.adopt(first, 3, intent_at) is not None


def batch_doc(batch_id: str, metadata: dict | None, total: int) -> dict:
    return {"id": batch_id, "object": "batch", "status": "validating", "created_at": int(time.time()),
            "request_counts": {"total": total, "completed": 0, "failed": 0}, "metadata": metadata}


async def test_openai_counts_zero_while_validating_so_our_tag_is_enough_and_an_untagged_batch_is_not_ours(
        tmp_path):
    base = "http://api.test"
    async with job(base, tmp_path / "ours.db") as ours:
        chunk_id = await ours.ledger.record_intent(kind="input", root_seq=0, take=3, nbytes=1_000)
        page = {"data": [batch_doc("b_untagged", None, 3),
                         batch_doc("b_other_chunk", {"batch_scheduler": ours.submitter.tag(chunk_id + 1)}, 3),
                         batch_doc("b_ours", {"batch_scheduler": ours.submitter.tag(chunk_id)}, 0)],
                "has_more": False}
        with aioresponses() as m:
            m.get(f"{base}/v1/batches?limit=100", payload=page)
            info = await ours.submitter.adopt(chunk_id, 3, time.time() - 1)
        assert info is not None and info.id == "b_ours"
        page["data"] = page["data"][:2]
        with aioresponses() as m:
            m.get(f"{base}/v1/batches?limit=100", payload=page)
            assert await ours.submitter.adopt(chunk_id + 1, 2, time.time() - 1) is None  # its count contradicts


async def test_without_metadata_an_anthropic_batch_is_adopted_by_its_request_count(sim, tmp_path):
    async with job(sim.url, tmp_path / "ours.db", provider="anthropic") as ours:
        chunk_id, intent_at = await ours.lost_create(3, "a")
        assert await ours.submitter.adopt(chunk_id, 2, intent_at) is None
        info = await ours.submitter.adopt(chunk_id, 3, intent_at)
        assert info is not None and await ours.ledger.claimed_batch_ids() == {info.id}


async def test_the_job_token_is_made_once_kept_in_the_ledger_and_differs_between_jobs(tmp_path):
    async with job("http://api.test", tmp_path / "a.db") as first:
        tag = first.submitter.tag(7)
        token = first.ledger.read_meta()[JOB_TOKEN_KEY]
    assert tag == f"job-{token}-chunk-7"
    async with job("http://api.test", tmp_path / "a.db") as restarted:
        assert restarted.submitter.tag(7) == tag
    async with job("http://api.test", tmp_path / "b.db") as other:
        assert other.submitter.tag(7) != tag


async def test_a_chunk_sent_before_the_job_had_a_token_still_adopts_its_old_style_tagged_batch(sim, tmp_path):
    # a job started by an earlier version tagged its batches `chunk-<id>`; its intents predate the token
    ledger = Ledger(str(tmp_path / "ours.db"))
    old_chunk = await ledger.record_intent(kind="input", root_seq=0, take=3, nbytes=1_000)
    ledger.close()
    async with job(sim.url, tmp_path / "ours.db", clock=lambda: time.time() + 5) as ours:
        intent_at = time.time() - 0.5
        await ours.provider.create(lines_for("openai", 3, "old"), tag=f"chunk-{old_chunk}")
        new_chunk = await ours.ledger.record_intent(kind="input", root_seq=1, take=3, nbytes=1_000)
        await ours.provider.create(lines_for("openai", 3, "new"), tag=f"chunk-{new_chunk}")
        assert await ours.submitter.adopt(new_chunk, 3, time.time() + 6) is None  # after the token: no
        assert await ours.submitter.adopt(old_chunk, 3, intent_at) is not None


async def test_two_openai_jobs_on_one_account_losing_creates_each_adopt_only_their_own(sim, tmp_path):
    sim.config.lost_create_rate = 0.3
    settings = fast_settings(sim.url, provider="openai", auth="bearer", batch_size=25, concurrency=2)
    ids, engines = {}, []
    for name in ("a", "b"):
        # the same batch sizes in both jobs: counts and times alone cannot tell their batches apart
        ids[name] = write_requests(tmp_path / f"{name}.jsonl", 400, prefix=name)
        engines.append(Engine(settings, str(tmp_path / name), [str(tmp_path / f"{name}.jsonl")], quiet=True))
    results = await asyncio.gather(*(e.run() for e in engines))
    for name, result in zip(("a", "b"), results, strict=True):
        assert result.exit_code == ExitCode.OK, result.message
        assert sorted(ids_of(read_results(str(tmp_path / name)))) == sorted(ids[name])
    assert sim.stats["lost_creates"] > 0
    assert sum(r.summary["batches"]["adopted"] for r in results) == sim.stats["lost_creates"]
    assert sim.stats["requests_created"] == 800  # no batch taken by the other job, nothing sent twice


class FencedAtSubmit(Ledger):
    """A cluster ledger whose claim went while the create was in the air: the batch id cannot be written."""

    def __init__(self, path: str, adopted_by_owner: bool):
        super().__init__(path)
        self.adopted_by_owner = adopted_by_owner
        self.orphans: list[str] = []

    async def record_submitted(self, chunk_id: int, batch_id: str, *, adopted: bool = False) -> None:
        raise errors.LeaseLost("job j: this node's claim is gone")

    async def record_orphan(self, batch_id: str) -> bool:
        if self.adopted_by_owner:
            return False
        self.orphans.append(batch_id)
        return True


async def test_a_batch_made_after_the_claim_was_gone_is_cancelled_unless_the_new_owner_adopted_it(sim, tmp_path):
    for adopted_by_owner, cancels in ((False, 1), (True, 0)):
        settings = fast_settings(sim.url)
        ledger = FencedAtSubmit(str(tmp_path / f"ledger-{adopted_by_owner}.db"), adopted_by_owner)
        try:
            async with HttpClient(headers_for(settings), settings.retry, secret=settings.api_key) as http:
                p = make_provider(settings, http)
                submitter = Submitter(p, ledger, Rejects(None, []), overhead=p.body_overhead)
                chunk_id = await ledger.record_intent(kind=ChunkKind.INPUT, root_seq=0, take=2, nbytes=1_000)
                lines = lines_for("anthropic", 2, f"o{adopted_by_owner}")
                before = sim.stats["cancels"]
                with pytest.raises(errors.LeaseLost):
                    await submitter.submit(Outgoing(chunk_id, ChunkKind.INPUT, 0, 0, lines, ["a", "b"], 1,
                                                    time.time()))
                assert sim.stats["cancels"] - before == cancels
                assert len(ledger.orphans) == cancels
        finally:
            ledger.close()
