"""Jobs that share an account take turns to create and look for lost batches where only request counts tell
batches apart (Anthropic): a create whose answer was lost keeps its job's turn until its chunk has looked,
so two jobs whose requests carry the very same custom_ids never adopt each other's batch."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace

import orjson

from batch_scheduler.job.send.claims import Claims
from batch_scheduler.job.send.submitter import Outgoing
from batch_scheduler.state.ledger.sqlite import ChunkKind

from ..helpers import request
from .test_submitter import job

MODELS = ("claude-haiku-4-5", "claude-sonnet-4-5", "claude-opus-4")


async def test_jobs_sharing_custom_ids_on_one_account_never_adopt_each_others_batch_when_every_create_is_lost(
        sim, tmp_path):
    sim.ctx.config = replace(sim.ctx.config, lost_create_rate=1.0)  # every batch is made, every answer lost
    shared = Claims()
    ids = [f"same-{i}" for i in range(5)]
    async with job(sim.url, tmp_path / "a.db", provider="anthropic", claims=shared, owner="a") as a, \
            job(sim.url, tmp_path / "b.db", provider="anthropic", claims=shared, owner="b") as b, \
            job(sim.url, tmp_path / "c.db", provider="anthropic", claims=shared, owner="c") as c:
        async def send(one, model: str) -> list[str]:
            lines = [orjson.dumps(request(cid, model=model)) for cid in ids]
            chunk_id = await one.ledger.record_intent(kind=ChunkKind.INPUT, root_seq=0, take=5, nbytes=1_000)
            (done,) = await one.submitter.submit(Outgoing(chunk_id, ChunkKind.INPUT, 0, 0, lines, ids, 1,
                                                          time.time()))
            return sim.ctx.store.batches[done.info.id].models

        for _ in range(3):  # creates of three jobs at once, each answer lost, each looked for
            got = await asyncio.gather(*(send(one, model) for one, model in zip((a, b, c), MODELS, strict=True)))
            assert got == [[model] * 5 for model in MODELS]
        counts = [await one.ledger.acounters() for one in (a, b, c)]
        assert [(n["creates_unknown"], n["batches_adopted"]) for n in counts] == [(3, 3)] * 3


async def test_a_job_waits_for_the_turn_another_job_holds_and_its_own_creates_share_it(sim, tmp_path):
    shared = Claims()
    entered: list[str] = []
    async with shared.turn("a"):
        async with shared.turn("a"):  # a's second create joins a's turn
            entered.append("a twice")
        waiting = asyncio.create_task(_enter(shared, "b", entered))
        await asyncio.sleep(0)
        later = asyncio.create_task(_enter(shared, "a", entered))  # b waits: a's new create waits behind it
        for _ in range(5):
            await asyncio.sleep(0)
        assert entered == ["a twice"]
    await asyncio.gather(waiting, later)
    assert entered == ["a twice", "b", "a"]


async def _enter(claims: Claims, owner: str, entered: list[str]) -> None:
    async with claims.turn(owner):
        entered.append(owner)
