"""Two chunks whose creates were both lost where only request counts tell batches apart (Anthropic): the
one looking first may adopt the other's batch. The other must not send its requests again (paying twice)
before that adoption is proved or let go: it waits, then adopts its own batch."""

from __future__ import annotations

import asyncio

import pytest

from batch_scheduler.job.engine import Engine, ExitCode
from batch_scheduler.job.send.submitter import Submitter
from batch_scheduler.providers.anthropic.provider import AnthropicProvider
from batch_scheduler.providers.base import BatchInfo
from batch_scheduler.state import open_ledger
from batch_scheduler.state.ledger.rows import ChunkState

from ..conftest import fast_settings
from ..helpers import ids_of, read_results, write_requests


async def _killed_in_create(settings, out: str, inputs: list[str], monkeypatch, chunk: str, *, made: bool) -> None:
    """One run, killed while the create of `chunk` is in the air: a batch made (the answer lost) or not (the
    request never left). Every create before it goes through; a chunk looking for its lost create's batch
    looks only once that create is in the air."""
    create, adopt = AnthropicProvider.create, Submitter.adopt
    in_air = asyncio.Event()

    async def lost(self: AnthropicProvider, lines: list[bytes], *, tag: str) -> BatchInfo:
        if not tag.endswith(chunk):
            return await create(self, lines, tag=tag)
        if made:
            await create(self, lines, tag=tag)
        in_air.set()
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async def late(self: Submitter, chunk_id: int, n: int, intent_at: float | None) -> BatchInfo | None:
        await in_air.wait()
        return await adopt(self, chunk_id, n, intent_at)

    monkeypatch.setattr(AnthropicProvider, "create", lost)
    monkeypatch.setattr(Submitter, "adopt", late)
    run = asyncio.create_task(Engine(settings, out, inputs, quiet=True).run())
    await asyncio.wait_for(in_air.wait(), 20)
    await asyncio.sleep(0.05)
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run
    monkeypatch.setattr(AnthropicProvider, "create", create)
    monkeypatch.setattr(Submitter, "adopt", adopt)


@pytest.mark.parametrize("made", ["chunk-3", "chunk-2"])
async def test_two_lost_creates_with_one_batch_made_pay_once(sim, tmp_path, monkeypatch, made):
    ids = write_requests(tmp_path / "in.jsonl", 200)
    settings = fast_settings(sim.url, batch_size=50, concurrency=2)
    out, inputs = str(tmp_path / "out"), [str(tmp_path / "in.jsonl")]
    await _killed_in_create(settings, out, inputs, monkeypatch, "chunk-2", made=made == "chunk-2")
    await _killed_in_create(settings, out, inputs, monkeypatch, "chunk-3", made=made == "chunk-3")
    led = open_ledger(str(tmp_path / "out" / "ledger.db"))
    try:
        lost = [r.id for r in led.all_chunks() if r.state == ChunkState.SUBMITTING and r.create_at is not None]
    finally:
        led.close()
    assert lost == [2, 3]
    assert sim.stats["requests_created"] == 100  # chunk 1's, and one lost create's batch: neither recorded

    result = await Engine(settings, out, inputs, quiet=True).run()
    assert result.exit_code == ExitCode.OK, result.message
    assert sorted(ids_of(read_results(out))) == sorted(ids)
    assert sim.stats["requests_created"] == 200  # the batch made was adopted by its own chunk in the end


async def test_a_chunk_reading_the_ledger_as_an_adoption_settles_is_woken_by_that_settle():
    """Two chunks wait for the batches other chunks adopted. One reads the ledger (still one held), the only
    adoption settles meanwhile, and the other chunk wakes, looks and goes on: the first must wake too, not wait
    for a settle that never comes (its chunk never sent, the job never done)."""
    from contextlib import asynccontextmanager
    from types import SimpleNamespace

    held = [7]  # the chunk whose adopted batch is not yet proved its own
    reading, go_on = asyncio.Event(), asyncio.Event()

    class Ledger:
        async def chunks_in(self, state):
            now = [SimpleNamespace(id=i, adopted=True) for i in held]
            if asyncio.current_task().get_name() == "first" and not reading.is_set():
                reading.set()
                await go_on.wait()  # read before the settle, answered after it
            return now

    submitter = Submitter.__new__(Submitter)
    submitter.provider = SimpleNamespace(tag_of=None)
    submitter.ledger = Ledger()
    submitter._settled = asyncio.Event()

    @asynccontextmanager
    async def turn():
        yield

    async def look(chunk_id, n, intent_at):
        return None

    submitter._turn, submitter._look = turn, look
    second = asyncio.create_task(submitter._when_adoptions_settle(2, 10, None), name="second")
    await asyncio.sleep(0.05)  # the second waits
    first = asyncio.create_task(submitter._when_adoptions_settle(1, 10, None), name="first")
    await reading.wait()
    held.clear()
    submitter.settled()
    assert await asyncio.wait_for(second, 2) is None
    go_on.set()
    assert await asyncio.wait_for(first, 2) is None
