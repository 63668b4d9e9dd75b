"""The cut of a job that primes: lines without a cache mark take the plain path, lines with one go to their
prefix's lane from the first of them on, and the chunks are the same every time and replay as cut."""

from __future__ import annotations

import dataclasses

import orjson

from batch_scheduler.core.settings import Settings
from batch_scheduler.job.input.batcher import cut_chunks
from batch_scheduler.job.input.prefix import job_lane_of
from batch_scheduler.job.input.reader import JsonlSource
from batch_scheduler.job.input.replay import Replay
from batch_scheduler.job.input.validate import Rejects, Validator
from batch_scheduler.providers.anthropic.provider import AnthropicProvider
from batch_scheduler.state.ledger.sqlite import ChunkKind, Ledger

SYSTEMS = ("You label tickets. " * 20, "You label tickets tersely. " * 20)


def request(i: int, system: str | None) -> bytes:
    params: dict = {"model": "claude-sonnet-4-5", "max_tokens": 16, "messages": [{"role": "user", "content": f"q{i}"}]}
    if system is not None:
        params["system"] = [{"type": "text", "text": system, "cache_control": {"type": "ephemeral"}}]
    return orjson.dumps({"custom_id": f"r{i:03d}", "params": params})


def write(path, marks: list[str | None]) -> None:
    with open(path, "wb") as f:
        for i, system in enumerate(marks):
            f.write(request(i, system) + b"\n")
            if i == 40:
                f.write(b"{not json\n")  # a rejected line inside open chunks of several lanes


def provider(prime_via: str = "realtime") -> AnthropicProvider:
    return AnthropicProvider(dataclasses.replace(Settings(), prime_via=prime_via), http=None)


async def cut(path, prime_via: str = "realtime", batch_size: int = 7) -> list:
    p = provider(prime_via)
    return [c async for c in cut_chunks(JsonlSource(str(path), 0).blocks(), Validator(p, 1 << 20),
                                        Rejects(None, [str(path)]), batch_size=batch_size, batch_bytes=1 << 24,
                                        overhead=p.body_overhead, unit_of=lambda fi: "bytes")]


def spans(chunks: list) -> list:
    return [(c.seq, c.start_pos, c.start_line, c.end_pos, c.ids, c.skipped) for c in chunks]


async def test_a_job_without_marks_is_cut_as_with_priming_off(tmp_path):
    write(tmp_path / "in.jsonl", [None] * 50)
    assert spans(await cut(tmp_path / "in.jsonl")) == spans(await cut(tmp_path / "in.jsonl", "off"))


async def test_marked_lines_after_plain_ones_keep_to_their_prefix_and_every_chunk_replays_as_cut(tmp_path):
    marks = [None] * 24 + [SYSTEMS[i % 3] if i % 3 < 2 else None for i in range(60)]  # plain, then mixed
    write(tmp_path / "in.jsonl", marks)
    chunks = await cut(tmp_path / "in.jsonl")
    assert spans(chunks) == spans(await cut(tmp_path / "in.jsonl"))
    assert [c.seq for c in chunks] == list(range(len(chunks)))
    assert sorted(i for c in chunks for i in c.ids) == [f"r{i:03d}" for i in range(len(marks))]
    lane_of = job_lane_of(provider())
    assert lane_of is not None
    lanes = [{lane_of(orjson.loads(x)) for x in c.lines} for c in chunks]
    assert all(len(one) == 1 for one in lanes) and len(set().union(*lanes)) == 3  # plain and two prefixes
    assert any((0, 42) in c.skipped for c in chunks)  # the bad line, listed in the chunks open around it

    ledger = Ledger(str(tmp_path / "ledger.db"))
    try:
        replay = Replay([JsonlSource(str(tmp_path / "in.jsonl"), 0)], provider().check_request, ledger,
                        lane_of=lane_of)
        for c in chunks:
            chunk_id = await ledger.record_intent(kind=ChunkKind.INPUT, root_seq=c.seq, take=c.n, nbytes=c.nbytes,
                                                  span=(c.start_file, c.start_pos, c.start_line, c.end_file,
                                                        c.end_pos), skipped=c.skipped)
            parts = await replay.parts(await ledger.chunk(chunk_id))
            assert parts == [(x, i, n) for n, (x, i) in enumerate(zip(c.lines, c.ids, strict=True))]
    finally:
        ledger.close()
