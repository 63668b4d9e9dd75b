"""Jobs of one process (a daemon's) share their claims: a lost create never adopts another job's batch, even
one whose requests carry the very same custom_ids (Anthropic batches keep no metadata to tell them apart)."""

from __future__ import annotations

import time

from batch_scheduler.job.send.claims import Claims
from batch_scheduler.job.send.submitter import Outgoing
from batch_scheduler.state.ledger.sqlite import ChunkKind

from .test_submitter import job, lines_for


async def test_a_lost_create_does_not_adopt_the_batch_another_job_of_the_process_just_made(sim, tmp_path):
    shared = Claims()
    async with job(sim.url, tmp_path / "a.db", provider="anthropic", claims=shared, owner="a") as a, \
            job(sim.url, tmp_path / "b.db", provider="anthropic", claims=shared, owner="b") as b:
        lost = await a.ledger.record_intent(kind=ChunkKind.INPUT, root_seq=0, take=5, nbytes=1_000)
        intent_at = time.time() - 0.5
        # meanwhile job b sends a chunk of the same size with the same custom_ids, and it is created
        theirs = await b.ledger.record_intent(kind=ChunkKind.INPUT, root_seq=0, take=5, nbytes=1_000)
        lines = lines_for("anthropic", 5, "same")
        (done,) = await b.submitter.submit(Outgoing(theirs, ChunkKind.INPUT, 0, 0, lines, [f"same-{i}" for i in
                                                                                             range(5)], 1, time.time()))
        # a's create never reached the provider: the list holds b's batch only, of the right count and time
        assert [info.id async for info in a.provider.recent(intent_at - 120)] == [done.info.id]
        assert await a.submitter.adopt(lost, 5, intent_at) is None
        assert await a.ledger.claimed_batch_ids() == set()
