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


PLAIN = b'{"custom_id":"%s","params":{"model":"claude-sonnet-4-5","max_tokens":%s,"system":"Be brief.",' \
        b'"messages":[{"role":"user","content":"hello"}]}}'


def _shapes() -> list[bytes]:
    """Lines of the plain shape and of every way a line can differ from it (each must be judged as the full
    check judges it)."""
    base = orjson.loads(PLAIN % (b"base", b"64"))
    lines = [PLAIN % (b"p%d" % i, n) for i, n in enumerate([b"0", b"1", b"64", b"-1", b"true", b"64.0", b"null",
                                                             b'"64"', b"1e999", b"99999999999999999999999",
                                                             b"9223372036854775807"])]
    changes = {"stream-false": {"stream": False}, "stream-true": {"stream": True}, "temperature": {"temperature": 0.5},
               "top-k": {"top_k": -1}, "system-null": {"system": None}, "system-blocks":
               {"system": [{"type": "text", "text": "s", "cache_control": {"type": "ephemeral"}}]},
               "model-null": {"model": None}, "model-int": {"model": 4}, "unknown": {"frobnicate": 1},
               "metadata": {"metadata": {"user_id": "u"}}, "tools": {"tools": []},
               "top-cache": {"cache_control": {"type": "ephemeral"}},
               "marked-message": {"messages": [{"role": "user", "content": "x", "cache_control": {"type": "ephemeral"}}]},
               "block-content": {"messages": [{"role": "user", "content": [{"type": "text", "text": "x",
                                                                            "cache_control": {"type": "ephemeral"}}]}]},
               "role-int": {"messages": [{"role": 1, "content": "x"}]}, "no-messages": {"messages": None},
               "messages-empty": {"messages": []}, "message-extra": {"messages": [{"role": "user", "content": "x",
                                                                                     "name": "n"}]}}
    for name, change in changes.items():
        params = {**base["params"], **change}
        lines.append(orjson.dumps({"custom_id": name, "params": {k: v for k, v in params.items() if v is not None}
                                   if name == "no-messages" else params}))
    lines += [
        orjson.dumps({"custom_id": "extra-key", "params": base["params"], "note": 1}),
        orjson.dumps({"custom_id": "no-model", "params": {k: v for k, v in base["params"].items() if k != "model"}}),
        PLAIN % (b"has space", b"5"), PLAIN % (b"x" * 65, b"5"), PLAIN % (b"base", b"5"),  # invalid ids; a duplicate
        PLAIN.replace(b'"role":"user"', b'"role":1e999') % (b"huge-role", b"5"),
        PLAIN.replace(b'"hello"', b'"\\ud800"') % (b"surrogate", b"5"),
        PLAIN.replace(b'"params"', b'"\\u0070arams"') % (b"escaped-key", b"5"),
        PLAIN.replace(b'"max_tokens"', b'"max_tokens":-5,"max_tokens"') % (b"dup-key", b"5"),
        PLAIN.replace(b'"content"', b'"\\u0063ache_control":{"type":"ephemeral"},"content"') % (b"escaped-mark", b"5"),
        PLAIN.replace(b'"hello"', b'"caf\xe9"') % (b"latin1", b"5"),
        (PLAIN % (b"trailing", b"5")) + b" x", b"  " + PLAIN % (b"spaced", b"5") + b"\r",
        orjson.dumps({"custom_id": "base", "params": base["params"]}),  # the duplicate of the first base line
    ]
    return [PLAIN % (b"base", b"64")] + lines


@pytest.mark.parametrize("version", ["2026-10-21", "2023-06-01", "2099-01-01"])
@pytest.mark.parametrize("prime_via", ["realtime", "off"])
def test_the_fast_check_judges_every_line_as_the_full_check_does(version, prime_via):
    settings = Settings(model="claude-sonnet-4-5", anthropic_version=version, prime_via=prime_via)
    fast = Validator(AnthropicProvider(settings, http=None), 1 << 20)
    full = Validator(AnthropicProvider(settings, http=None), 1 << 20)
    full._plain = None
    lines = _shapes()
    judged = [(fast.check(raw), fast.lane) for raw in lines]
    assert judged == [(full.check(raw), full.lane) for raw in lines]
    accepted = {j[0][0] for j in judged if j[0][1] is not None}
    assert {"base", "p2", "spaced"} <= accepted  # the plain shape went through
    assert not {"stream-true", "no-messages", "huge-role", "surrogate", "latin1", "trailing"} & accepted
    assert not {"p3", "p4", "p5", "p9"} & accepted or version == "2099-01-01"  # the API judges an unknown version
    # a version this program knows reads the plain shape with the fast check; an unknown one never does
    assert (fast._plain is not None and fast._plain([PLAIN % (b"z", b"5")]) == ["z"]) == (version != "2099-01-01")
