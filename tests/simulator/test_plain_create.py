"""The simulator's cheap create path (a body of plain requests, one typed decoder) gives the requests the
general path gives for the same body and version, to the token; a body it cannot take whole is left to the
general path, which decides and says what is wrong."""

from __future__ import annotations

import json
import random

import orjson
import pytest

from batch_scheduler.simulator.anthropic.plain import plain_requests
from batch_scheduler.simulator.batches import parse_requests
from batch_scheduler.simulator.responses import Rejected, requests_of
from batch_scheduler.simulator.validation import VERSIONS

TEXTS = ["Summarise this.", "", "say \"hi\" \\ back", "tab\tnew\nline\x01\x7f", "東京は晴れ", "emoji 😀 ok",
         "x" * 700, "cache_control", "é" * 30]


def _params(rng: random.Random, clean: bool) -> dict:
    p: dict = {"model": "claude-sonnet-4-5", "max_tokens": rng.choice([1, 64, 1024]),
               "messages": [{"role": rng.choice(["user", "assistant"]), "content": rng.choice(TEXTS)}
                            for _ in range(rng.randrange(1, 4))]}
    if rng.random() < 0.5:
        p["system"] = rng.choice(TEXTS)
    roll = 1.0 if clean else rng.random()
    if roll < 0.03:
        p["model"] = rng.choice(["", None, 5])
    elif roll < 0.08:
        p["max_tokens"] = rng.choice([0, -1, 5.0, True, "5", None, 2**63 - 1, 2**63, 2**64, 10**30])
    elif roll < 0.11:
        p["messages"] = rng.choice([[], None, "hi", [{"role": "system", "content": "x"}], [{"role": "user"}],
                                    [{"role": "user", "content": [{"type": "text", "text": "x"}]}],
                                    [{"role": "user", "content": "x", "name": "n"}]])
    elif roll < 0.14:
        p["system"] = rng.choice([None, [{"type": "text", "text": "s", "cache_control": {"type": "ephemeral"}}]])
    elif roll < 0.17:
        p[rng.choice(["temperature", "stream", "metadata", "top_k"])] = rng.choice([0.5, True, {}, 3])
    elif roll < 0.19:
        del p["max_tokens"]
    keys = list(p)
    rng.shuffle(keys)  # key order does not change a count
    return {k: p[k] for k in keys}


def _body(rng: random.Random) -> bytes:
    items = []
    clean = rng.random() < 0.5  # no request the cheap path must leave (the rest: a few here and there)
    for i in range(rng.randrange(1, 40)):
        cid = f"req-{i}"
        roll = 1.0 if clean else rng.random()
        if roll < 0.01:
            cid = "has space"
        elif roll < 0.02 and items:
            cid = items[0]["custom_id"]  # a duplicate
        elif roll < 0.025:
            cid = "x" * 65
        items.append({"custom_id": cid, "params": _params(rng, clean)})
    doc: object = {"requests": items}
    roll = rng.random()
    if roll < 0.02:
        doc = {"requests": []}
    elif roll < 0.04:
        doc = {"requests": items, "extra": 1}
    text = json.dumps(doc, ensure_ascii=rng.random() < 0.3, indent=rng.choice([None, 1])).encode()
    if rng.random() < 0.05:  # a key given twice: the last one counts, for both readers
        text = text.replace(b'"model": "claude-sonnet-4-5"', b'"model": "first", "model": "claude-sonnet-4-5"', 1)
    return text


def _general(body: bytes, version: str):
    try:
        reqs = parse_requests(requests_of(orjson.loads(body)), "params", version=version)
    except (Rejected, orjson.JSONDecodeError):
        return None
    return reqs


@pytest.mark.parametrize("seed", range(30))
def test_the_cheap_create_reads_what_the_general_path_reads(seed):
    rng = random.Random(seed)
    taken = 0
    for _ in range(60):
        body, version = _body(rng), rng.choice(VERSIONS)
        cheap = plain_requests(body, version)
        if cheap is None:
            continue  # the general path decides
        taken += 1
        general = _general(body, version)
        assert general is not None, body  # the general path refuses nothing the cheap one takes
        for field in ("custom_ids", "models", "max_tokens", "in_tokens", "invalid", "cache", "written"):
            assert getattr(cheap, field) == getattr(general, field), (field, body)
    assert taken > 15  # bodies of plain requests are taken


def test_a_body_of_plain_requests_is_taken_and_others_are_left_to_the_general_path():
    plain = {"custom_id": "a", "params": {"model": "m", "max_tokens": 5, "system": "s",
                                          "messages": [{"role": "user", "content": "q"}]}}
    assert plain_requests(orjson.dumps({"requests": [plain]}), "2023-06-01") is not None
    temperature = {**plain, "params": {**plain["params"], "temperature": 0.5}}
    assert plain_requests(orjson.dumps({"requests": [plain, temperature]}), "2023-06-01") is None
    zero = {**plain, "params": {**plain["params"], "max_tokens": 0}}
    assert plain_requests(orjson.dumps({"requests": [zero]}), "2026-10-21") is not None
    assert plain_requests(orjson.dumps({"requests": [zero]}), "2023-06-01") is None  # 0 is refused there
