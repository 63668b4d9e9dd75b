"""Claude on Vertex runs at most 4 batch jobs per project (Vertex's default quota): admission holds a queue of
4 jobs for Claude batches, a 429 at a Claude create is that queue being full (no attempt used), and a
resumed run counts the Claude jobs an earlier run left running."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from batch_scheduler.job.engine import Engine, ExitCode
from batch_scheduler.providers.base import BatchInfo
from batch_scheduler.providers.google.vertex import VertexProvider
from batch_scheduler.simulator import SimConfig

from ..gcp import service_account, vertex_settings
from ..helpers import ids_of, read_results, write_requests


@pytest.fixture
def credentials(sim, tmp_path) -> str:
    return service_account(tmp_path / "sa.json", sim.url)


async def test_a_429_at_a_claude_create_is_a_full_queue_and_uses_no_attempt(sim, tmp_path, credentials):
    sim.config = SimConfig(seed=5, processing_s=0.2, vertex_claude_jobs=2)  # a project below the default
    ids = write_requests(tmp_path / "in.jsonl", 400)
    settings = vertex_settings(sim.url, credentials, batch_size=50, concurrency=16, max_attempts=1)
    engine = Engine(settings, str(tmp_path / "out"), [str(tmp_path / "in.jsonl")], quiet=True)
    result = await engine.run()
    assert result.exit_code == ExitCode.OK, result.message
    assert sorted(ids_of(read_results(str(tmp_path / "out")))) == sorted(ids)
    assert engine.stats.queue_text().startswith("queued 0/2 jobs")  # the progress line counts jobs (learned: 2)
    queue = result.summary["queue"]
    assert queue["queue_full_answers"] >= 1  # each a 429 at create, sent again with its one attempt unused
    assert queue["limits"]["claude jobs"]["peak_in_flight"] <= 4
    assert sim.stats["peak_vertex_claude_jobs"] == 2


async def test_a_resumed_run_counts_the_claude_jobs_an_earlier_run_left_running(sim, tmp_path, credentials,
                                                                                 monkeypatch):
    sim.config = SimConfig(seed=5, processing_s=1.0)
    ids = write_requests(tmp_path / "in.jsonl", 500)
    settings = vertex_settings(sim.url, credentials, batch_size=50, concurrency=16)
    out, inputs = str(tmp_path / "out"), [str(tmp_path / "in.jsonl")]
    create, listing = VertexProvider.create, VertexProvider.recent

    async def answer_lost_at_the_fourth(self: VertexProvider, lines: list[bytes], *, tag: str) -> BatchInfo:
        info = await create(self, lines, tag=tag)
        if sim.stats["calls"]["vertex.create"] >= 4:
            await asyncio.Event().wait()  # the stop comes before this create's answer is recorded
        return info

    monkeypatch.setattr(VertexProvider, "create", answer_lost_at_the_fourth)
    first = asyncio.create_task(Engine(settings, out, inputs, quiet=True).run())
    while sim.stats["calls"].get("vertex.create", 0) < 4:  # the project's 4 Claude jobs running, then a stop
        await asyncio.sleep(0.01)
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    assert sim.stats["calls"]["vertex.create"] == 4  # admission held the fifth

    async def slow_listing(self: VertexProvider, since: float) -> AsyncIterator[BatchInfo]:
        await asyncio.sleep(0.5)  # a lost create's batch is looked for while the input is read on
        async for info in listing(self, since):
            yield info

    monkeypatch.setattr(VertexProvider, "create", create)
    monkeypatch.setattr(VertexProvider, "recent", slow_listing)
    result = await Engine(settings, out, inputs, quiet=True).run()
    assert result.exit_code == ExitCode.OK, result.message
    assert sorted(ids_of(read_results(out))) == sorted(ids)
    # none refused: the resumed run waited for its own 4, the one whose create's answer was lost included
    # (it holds its room while its batch is looked for)
    assert sim.stats["calls"]["vertex.create"] == 10
    assert sim.stats["peak_vertex_claude_jobs"] == 4
    assert result.summary["queue"]["queue_full_answers"] == 0
