"""A provider with lanes and a floor (Bedrock: one model a job, 100 records at least): no lane's batch is
under the floor but a lane's only one, a lane's small last chunk joins the lane's one before (the lines
refused between them skipped, so it replays as cut), and a whole job under the floor is refused."""

from __future__ import annotations

import orjson
import pytest

from batch_scheduler.core.errors import UsageError
from batch_scheduler.core.settings import Settings
from batch_scheduler.job.input.batcher import cut_chunks
from batch_scheduler.job.input.reader import JsonlSource
from batch_scheduler.job.input.replay import Replay
from batch_scheduler.job.input.validate import Rejects, Validator
from batch_scheduler.providers.aws.bedrock import BedrockProvider
from batch_scheduler.state.ledger.sqlite import ChunkKind, Ledger

CLAUDE = "anthropic.claude-3-5-haiku-20241022-v1:0"
NOVA = "amazon.nova-lite-v1:0"


def line(cid: str, model: str) -> bytes:
    return orjson.dumps({"custom_id": cid, "params": {"model": model, "max_tokens": 10,
                                                      "messages": [{"role": "user", "content": f"q {cid}"}]}})


async def cut(path, provider, batch_size: int):
    return [c async for c in cut_chunks(JsonlSource(str(path), 0).blocks(), Validator(provider, 1 << 20),
                                        Rejects(None, [str(path)]), batch_size=batch_size, batch_bytes=1 << 26,
                                        overhead=provider.body_overhead, unit_of=lambda fi: "bytes")]


def provider() -> BedrockProvider:
    return BedrockProvider(Settings(provider="bedrock", model=CLAUDE), http=None)


async def test_each_lanes_small_last_chunk_joins_its_own_and_replays_as_cut(tmp_path):
    # Claude: 250 lines (200 + 50: joined), Nova: 130 (one chunk, over the floor); a repeated custom_id of
    # Claude's refused while Claude has no open chunk (after its first closes, before its second opens)
    rows = [line(f"c{i:03d}", CLAUDE) for i in range(200)] + [line("n000", NOVA), line("c000", CLAUDE)]
    rows += [line(f"n{i:03d}", NOVA) for i in range(1, 130)] + [line(f"c{i:03d}", CLAUDE) for i in range(200, 250)]
    (tmp_path / "in.jsonl").write_bytes(b"\n".join(rows) + b"\n")
    p = provider()
    chunks = await cut(tmp_path / "in.jsonl", p, 200)
    assert [(p.lane_of(orjson.loads(c.lines[0])), c.n) for c in chunks] == [(CLAUDE, 250), (NOVA, 130)]
    assert [c.seq for c in chunks] == [0, 1]
    assert (0, 202) in chunks[0].skipped  # the refused repeat, inside the joined span
    ledger = Ledger(str(tmp_path / "ledger.db"))
    try:
        replay = Replay([JsonlSource(str(tmp_path / "in.jsonl"), 0)], p.check_request, ledger, lane_of=p.lane_of)
        for c in chunks:
            chunk_id = await ledger.record_intent(kind=ChunkKind.INPUT, root_seq=c.seq, take=c.n, nbytes=c.nbytes,
                                                  span=(c.start_file, c.start_pos, c.start_line, c.end_file,
                                                        c.end_pos), skipped=c.skipped)
            parts = await replay.parts(await ledger.chunk(chunk_id))
            assert parts == [(x, i, n) for n, (x, i) in enumerate(zip(c.lines, c.ids, strict=True))]
    finally:
        ledger.close()


async def test_a_lanes_only_chunk_under_the_floor_goes_as_it_is_in_a_larger_job(tmp_path):
    rows = [line(f"c{i:03d}", CLAUDE) for i in range(150)] + [line(f"n{i:03d}", NOVA) for i in range(30)]
    (tmp_path / "in.jsonl").write_bytes(b"\n".join(rows) + b"\n")
    chunks = await cut(tmp_path / "in.jsonl", provider(), 200)
    assert sorted(c.n for c in chunks) == [30, 150]  # Nova's 30: the provider fills its batch up to the floor


async def test_a_job_of_two_models_under_the_floor_together_is_refused_before_anything_goes(tmp_path):
    rows = [line(f"c{i:03d}", CLAUDE) for i in range(50)] + [line(f"n{i:03d}", NOVA) for i in range(30)]
    (tmp_path / "in.jsonl").write_bytes(b"\n".join(rows) + b"\n")
    with pytest.raises(UsageError) as refused:
        await cut(tmp_path / "in.jsonl", provider(), 200)
    assert str(refused.value) == ("the job has 80 requests, fewer than the 100 the provider takes in a batch: add "
                                  "requests to reach 100, or send these with another provider")
