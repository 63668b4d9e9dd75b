"""The cut takes a block's lines of the plain shape in bulk: the chunks, their spans, the lines each skips and
the rejected list are those the line-by-line cut gives, wherever the limits fall and whatever comes between."""

import gzip
import hashlib
import random

import orjson
import pytest
import xxhash

from batch_scheduler.core.settings import Settings
from batch_scheduler.job.input import reader
from batch_scheduler.job.input.batcher import BODY_WRAPPER_BYTES, chunk_digest, cut_chunks
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


def _digest(lines):
    """What the ledger keeps for a chunk: XXH3-128 over each line and its newline."""
    return "xxh3-128:" + xxhash.xxh3_128(b"".join(x + b"\n" for x in lines)).hexdigest()


def _sha256(lines):
    """What the ledger kept before XXH3: sha256 over each line and its newline."""
    return hashlib.sha256(b"".join(x + b"\n" for x in lines)).hexdigest()


async def _cut(path, validator_type, settings, *, hashed=None, **kw):
    """The chunks as the job cuts them (a line may be as long as a batch's body, less its wrapping), without
    the input's bytes each holds: those are checked here to hash as its lines do (`hashed` counts the chunks
    that hold them)."""
    provider = AnthropicProvider(settings, http=None)
    listed = path.parent / f"{validator_type.__name__}.rejected"
    rejects = Rejects(str(listed), [str(path)])
    validator = validator_type(provider, kw["batch_bytes"] - BODY_WRAPPER_BYTES)
    chunks = [c async for c in cut_chunks(JsonlSource(str(path), 0, max_line_bytes=1 << 20).blocks(), validator,
                                          rejects, overhead=provider.body_overhead, unit_of=lambda fi: "bytes", **kw)]
    rejects.close()
    rejected = listed.read_bytes() if listed.exists() else b""
    for c in chunks:
        assert chunk_digest(c.lines, c.pieces) == chunk_digest(c.lines) == _digest(c.lines)
        sha = _sha256(c.lines)
        assert chunk_digest(c.lines, c.pieces, like=sha) == chunk_digest(c.lines, like=sha) == sha
        if c.pieces is not None and hashed is not None:
            hashed.append(c.seq)
    return [{k: v for k, v in vars(c).items() if k != "pieces"} for c in chunks], rejected


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


@pytest.mark.parametrize("group", range(3))
async def test_a_chunk_hashed_from_the_inputs_bytes_has_the_digest_of_its_lines(tmp_path, monkeypatch, group):
    """A chunk whose lines were all taken in bulk is hashed from the reader's blocks instead of its lines joined
    again: the same digest over its lines and their newlines, across blocks and files' ends, whatever lies
    between (refused and blank lines, a carriage return, a last line without a newline, a .gz input)."""
    with_bytes = 0
    for seed in range(group * 10, group * 10 + 10):
        rng = random.Random(1000 + seed)
        monkeypatch.setattr(reader, "BLOCK_BYTES", rng.choice([700, 4096, 30_000, 256 << 10]))
        seen: list[str] = []
        kw = {"batch_size": rng.choice([3, 17, 100, 10_000]), "batch_bytes": rng.choice([2100, 5000, 40_000, 1 << 20])}
        rows = [_line(rng, i, seen, kw["batch_bytes"] - BODY_WRAPPER_BYTES) for i in range(rng.randrange(50, 1500))]
        ends = [b"\r\n" if rng.random() < 0.01 else b"\n" for _ in rows]
        data = b"".join(r + e for r, e in zip(rows, ends, strict=True))
        if rng.random() < 0.3:
            data = data[:-1]  # no newline after the last line
        path = tmp_path / f"in{seed}.jsonl{'.gz' if seed % 4 == 0 else ''}"
        path.write_bytes(gzip.compress(data) if seed % 4 == 0 else data)
        hashed: list[int] = []
        bulk = await _cut(path, Validator, Settings(prime_via="off"), hashed=hashed, **kw)
        assert bulk == await _cut(path, OneByOne, Settings(prime_via="off"), **kw)
        with_bytes += bool(hashed)
    assert with_bytes >= 6, "most inputs have chunks hashed from their bytes"


async def test_a_chunk_holds_the_inputs_bytes_of_its_lines_when_all_were_taken_in_bulk(tmp_path, monkeypatch):
    """Chunks of plain lines carry the reader's bytes of them (no line joined again to hash it); a line taken
    one by one (here: one with tools, and the rest of its block after it) makes its chunk hash its lines."""
    monkeypatch.setattr(reader, "BLOCK_BYTES", 2000)  # about 16 lines a block
    path = tmp_path / "in.jsonl"
    plain = {"model": "claude-sonnet-4-5", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}
    lines = [orjson.dumps({"custom_id": f"r{i}", "params": {**plain, **({"tools": []} if i == 45 else {})}})
             for i in range(100)]
    path.write_bytes(b"".join(x + b"\n" for x in lines))
    provider = AnthropicProvider(Settings(), http=None)
    rejects = Rejects(str(tmp_path / "rejected"), [str(path)])
    chunks = [c async for c in cut_chunks(JsonlSource(str(path), 0).blocks(), Validator(provider, 1 << 20), rejects,
                                          batch_size=30, batch_bytes=1 << 20, overhead=provider.body_overhead,
                                          unit_of=lambda fi: "bytes")]
    rejects.close()
    assert [c.pieces is not None for c in chunks] == [True, False, True, True]
    assert [b"".join(c.pieces) for c in chunks if c.pieces is not None] == [
        b"".join(x + b"\n" for x in lines[a:b]) for a, b in ((0, 30), (60, 90), (90, 100))]
