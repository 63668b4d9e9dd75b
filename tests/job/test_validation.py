"""Every bad line is named with its file and line; every good line still goes through."""

import tracemalloc

import orjson
import pytest

from batch_scheduler.core.settings import Settings
from batch_scheduler.job.input.batcher import cut_chunks
from batch_scheduler.job.input.reader import JsonlSource
from batch_scheduler.job.input.validate import FingerprintSet, Rejects, Validator
from batch_scheduler.providers.anthropic.provider import AnthropicProvider

from ..helpers import request

GOOD = orjson.dumps(request("good-1"))


async def validate_file(tmp_path, lines: list[bytes], *, model=None, batch_bytes=1 << 20):
    path = tmp_path / "in.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    settings = Settings(model=model, batch_bytes=batch_bytes)
    provider = AnthropicProvider(settings, http=None)
    rejects = Rejects(str(tmp_path / "rejected.jsonl"), [str(path)])
    validator = Validator(provider, batch_bytes - 64)
    src = JsonlSource(str(path), 0, max_line_bytes=batch_bytes)
    chunks = [c async for c in cut_chunks(src.blocks(), validator, rejects, batch_size=1000,
                                          batch_bytes=batch_bytes, overhead=provider.body_overhead,
                                          unit_of=lambda fi: "bytes")]
    rejects.close()
    rejected = [orjson.loads(x) for x in (tmp_path / "rejected.jsonl").read_bytes().splitlines()]
    accepted = [cid for c in chunks for cid in c.ids]
    return accepted, rejected


@pytest.mark.parametrize(("line", "error"), [
    (b'{"custom_id": "a", ', "malformed JSON"),
    (b'["custom_id", "a"]', "not a JSON object (got list)"),
    (b'{"custom_id": "caf\xe9", "params": {}}', "bytes that are not UTF-8 at column 19"),
    (b'{"params": {}}', "custom_id missing"),
    (b'{"custom_id": 12, "params": {}}', "custom_id is not a string (got int)"),
    (b'{"custom_id": "has space", "params": {}}', "custom_id 'has space' must be 1-64 characters"),
    (orjson.dumps({"custom_id": "x" * 65, "params": {}}), "must be 1-64 characters"),
    (b'{"custom_id": "p"}', "params missing or not an object"),
    (orjson.dumps(request("m", model=None)), "params.model missing (give --model"),
    (b'{"custom_id": "t", "params": {"model": "x", "messages": []}}', "params.max_tokens missing"),
    (b'{"custom_id": "t", "params": {"model": "x", "max_tokens": 5}}', "params.messages missing"),
    (b'{"custom_id": "s", "params": {"model": "x", "max_tokens": 5, "messages": [], "stream": true}}',
     "params.stream is not allowed in a batch"),
])
async def test_bad_line_is_rejected_with_file_line_and_reason(tmp_path, line, error):
    accepted, rejected = await validate_file(tmp_path, [GOOD, b"", line, orjson.dumps(request("good-2"))])
    assert accepted == ["good-1", "good-2"]
    assert len(rejected) == 1
    assert rejected[0]["file"].endswith("in.jsonl")
    assert rejected[0]["line"] == 3  # the blank line 2 is skipped but counted
    assert error in rejected[0]["error"]


async def test_duplicate_custom_id_keeps_the_first(tmp_path):
    dup = orjson.dumps(request("good-1", "second"))
    accepted, rejected = await validate_file(tmp_path, [GOOD, dup])
    assert accepted == ["good-1"]
    assert rejected == [{"file": rejected[0]["file"], "line": 2, "custom_id": "good-1",
                         "error": "duplicate custom_id 'good-1' (the first one is kept)"}]


async def test_line_larger_than_a_batch_is_rejected_without_holding_it(tmp_path):
    huge = orjson.dumps(request("big", "x" * 5000))
    accepted, rejected = await validate_file(tmp_path, [GOOD, huge, orjson.dumps(request("after"))],
                                             batch_bytes=2048)
    assert accepted == ["good-1", "after"]
    assert rejected[0]["line"] == 2
    assert "larger than a batch may be" in rejected[0]["error"]


async def test_model_flag_fills_missing_model(tmp_path):
    accepted, rejected = await validate_file(tmp_path, [orjson.dumps(request("m", model=None))], model="claude-x")
    assert accepted == ["m"] and rejected == []


def test_fingerprint_set_grows_and_finds_duplicates():
    s = FingerprintSet(slots=4)
    assert all(s.add(hash(f"id-{i}")) for i in range(10_000))
    assert len(s) == 10_000
    assert not s.add(hash("id-1234"))
    assert s.add(hash("id-10000"))


def test_a_line_re_encoded_to_fill_the_model_is_held_at_its_own_size():
    # A chunk in flight holds thousands of lines: orjson's raw output keeps a buffer ~8x the line.
    provider = AnthropicProvider(Settings(api_key="k", model="claude-x"), None)
    obj = request("m", "x" * 900, model=None)
    raw = orjson.dumps(obj)
    tracemalloc.start()
    try:
        held = [provider.check_request(obj, raw) for _ in range(200)]
        used = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    problem, line = held[0]
    assert problem is None and orjson.loads(line)["params"]["model"] == "claude-x"
    assert used < 200 * (len(line) + 200), f"{used / 200:.0f} bytes held per {len(line)}-byte line"


def test_reserving_room_keeps_what_the_set_holds():
    s = FingerprintSet(slots=4)
    assert all(s.add(hash(f"id-{i}")) for i in range(1_000))
    s.reserve(50_000)
    assert len(s) == 1_000 and not s.add(hash("id-999")) and s.add(hash("id-1000"))
    assert all(s.add(hash(f"more-{i}")) for i in range(20_000))
