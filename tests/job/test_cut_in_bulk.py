"""The cut takes a block's lines of the plain shape in bulk: the chunks, their spans, the lines each skips and
the rejected list are those the line-by-line cut gives, wherever the limits fall and whatever comes between."""

import random

import orjson
import pytest

from batch_scheduler.core.settings import Settings
from batch_scheduler.job.input import reader
from batch_scheduler.job.input.batcher import BODY_WRAPPER_BYTES, cut_chunks
from batch_scheduler.job.input.reader import JsonlSource
from batch_scheduler.job.input.validate import Rejects, Validator
from batch_scheduler.providers.anthropic.provider import AnthropicProvider

MARK = {"type": "ephemeral"}


class OneByOne(Validator):
    """The validator without the bulk path: every line through `check`."""

    def accept_plain(self, lines):
        return []


def _line(rng: random.Random, i: int, seen: list[str], max_line: int) -> bytes:
    roll = rng.random()
    cid = f"r{i}"
    params: dict = {"model": "claude-sonnet-4-5", "max_tokens": 64,
                    "messages": [{"role": "user", "content": "x" * rng.randrange(1, 300)}]}
    if rng.random() < 0.05:  # a line of the most a batch may hold, or one byte less
        bare = orjson.dumps({"custom_id": cid, "params": {**params, "messages": [{"role": "user", "content": ""}]}})
        params["messages"][0]["content"] = "z" * (max_line - len(bare) - rng.randrange(2))
    if roll < 0.04 and seen:
        cid = rng.choice(seen)  # a duplicate
    elif roll < 0.06:
        return b'{"custom_id": "broken", '
    elif roll < 0.08:
        return b""
    elif roll < 0.10:
        cid = "has space"
    elif roll < 0.12:
        params["messages"][0]["content"] = "y" * max_line  # longer than a batch may be
    elif roll < 0.14:
        params["temperature"] = 0.5  # refused by the current version
    elif roll < 0.16:
        params["tools"] = []  # valid, not the plain shape
    elif roll < 0.18:
        params["system"] = [{"type": "text", "text": "s" * 50, "cache_control": MARK}]  # a lane when priming
    seen.append(cid)
    return orjson.dumps({"custom_id": cid, "params": params})


async def _cut(path, validator_type, settings, **kw):
    """The chunks as the job cuts them (a line may be as long as a batch's body, less its wrapping)."""
    provider = AnthropicProvider(settings, http=None)
    listed = path.parent / f"{validator_type.__name__}.rejected"
    rejects = Rejects(str(listed), [str(path)])
    validator = validator_type(provider, kw["batch_bytes"] - BODY_WRAPPER_BYTES)
    chunks = [c async for c in cut_chunks(JsonlSource(str(path), 0, max_line_bytes=1 << 20).blocks(), validator,
                                          rejects, overhead=provider.body_overhead, unit_of=lambda fi: "bytes", **kw)]
    rejects.close()
    rejected = listed.read_bytes() if listed.exists() else b""
    return [vars(c) for c in chunks], rejected


@pytest.mark.parametrize("seed", range(40))
async def test_the_bulk_cut_is_the_line_by_line_cut(tmp_path, monkeypatch, seed):
    rng = random.Random(seed)
    monkeypatch.setattr(reader, "BLOCK_BYTES", rng.choice([700, 4096, 30_000, 256 << 10]))
    seen: list[str] = []
    n = rng.randrange(50, 1500)
    kw = {"batch_size": rng.choice([1, 3, 17, 100, 10_000]), "batch_bytes": rng.choice([700, 2100, 5000, 40_000])}
    path = tmp_path / "in.jsonl"
    path.write_bytes(b"".join(_line(rng, i, seen, kw["batch_bytes"] - BODY_WRAPPER_BYTES) + b"\n" for i in range(n)))
    settings = Settings(prime_via=rng.choice(["realtime", "off"]))
    bulk = await _cut(path, Validator, settings, **kw)
    one_by_one = await _cut(path, OneByOne, settings, **kw)
    assert bulk == one_by_one
    assert sum(len(c["ids"]) for c in bulk[0]) > 0


async def test_a_block_of_plain_lines_is_taken_in_bulk(tmp_path):
    """The bulk path is the one taken (else the test above compares the slow path with itself)."""
    path = tmp_path / "in.jsonl"
    path.write_bytes(b"".join(orjson.dumps({"custom_id": f"r{i}", "params": {
        "model": "claude-sonnet-4-5", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}}) + b"\n"
        for i in range(100)))
    calls = []

    class Counting(Validator):
        def check(self, raw):
            calls.append(raw)
            return super().check(raw)

    chunks, _ = await _cut(path, Counting, Settings(), batch_size=30, batch_bytes=1 << 20)
    assert [len(c["ids"]) for c in chunks] == [30, 30, 30, 10]
    assert calls == []
