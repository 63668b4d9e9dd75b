"""Fuzzing the provider's answers: for every provider, a real run against the simulator through a proxy
that rewrites some of its answers (fields dropped, of another type, bodies as strings, huge numbers,
extra fields, values of the right type drawn at random). Whatever comes back, the run ends with a
message (never an exception, never a traceback), and a clean run of the same command afterwards ends
with every request answered exactly once: nothing collected under the fuzzer is lost or doubled."""

from __future__ import annotations

import random
from typing import Any

import orjson
import pytest

from batch_scheduler.job.engine import Engine, ExitCode

from ..helpers import ids_of, read_results, write_requests
from .rewriting import Call, RewritingProxy

pytestmark = pytest.mark.timeout(120)

SEEDS = (1, 2, 3, 4)
ANSWER_RATE = 0.12  # of the JSON answers (create, retrieve, list), rewritten
LINE_RATE = 0.02  # of the result lines, rewritten
KINDS = ("drop", "other_type", "string", "huge", "extra", "same_type")


def drawn(rng: random.Random, like: Any = None) -> Any:
    """A random JSON value (of `like`'s type when given)."""
    kind = type(like).__name__ if like is not None else rng.choice(["str", "int", "float", "bool", "list", "dict",
                                                                    "NoneType"])
    return {"str": lambda: rng.choice(["", "x", "ended", "msgbatch_x", "ü" * 3, "a/b?c"]),
            "int": lambda: rng.choice([0, -1, 1, 2**63 - 1, rng.randint(0, 10**6)]),
            "float": lambda: rng.choice([0.0, -1.5, 1e300]),
            "bool": lambda: rng.random() < 0.5,
            "list": lambda: [drawn(rng) for _ in range(rng.randint(0, 2))] if kind == "list" and like is None else [],
            "dict": lambda: {} if like is None else {k: drawn(rng, v) for k, v in like.items()},
            "NoneType": lambda: None}[kind]()


def mutated(doc: Any, rng: random.Random, *, keep: tuple[str, ...] = ()) -> Any:
    """`doc` with one mutation somewhere in it (a copy). A key in `keep` is never given another value of
    its type: a batch id swapped for another well-formed one is a lie no client can tell from the truth."""
    if not isinstance(doc, dict) or not doc:
        return drawn(rng)
    doc = dict(doc)
    key = rng.choice(list(doc))
    if isinstance(doc[key], dict) and doc[key] and rng.random() < 0.5:
        doc[key] = mutated(doc[key], rng)  # deeper
        return doc
    kind = rng.choice(KINDS)
    if key in keep and kind == "same_type":
        kind = "drop"
    if kind == "drop":
        del doc[key]
    elif kind == "other_type":
        doc[key] = rng.choice([v for v in ("s", 7, 1.5, True, None, [1], {"a": 1}) if type(v) is not type(doc[key])])
    elif kind == "string":
        doc[key] = orjson.dumps(doc[key]).decode()
    elif kind == "huge":
        doc[key] = rng.choice([10**30, -(10**30), 1e308, 2**64])
    elif kind == "extra":
        doc[rng.choice(["note", "x_extra", "request_counts_extra"])] = drawn(rng)
        if isinstance(doc.get("request_counts"), dict):
            doc["request_counts"] = {**doc["request_counts"], "fuzz": drawn(rng)}
    else:
        doc[key] = drawn(rng, doc[key])
    return doc


def mutated_line(doc: dict, rng: random.Random) -> Any:
    """A result line mutated, mostly past its custom_id (a line without one stops the run at once)."""
    if rng.random() < 0.2:
        return mutated(doc, rng)
    rest = mutated({k: v for k, v in doc.items() if k != "custom_id"}, rng)
    return {"custom_id": doc["custom_id"], **rest} if isinstance(rest, dict) else rest


def fuzzer(seed: int):
    rng = random.Random(seed)

    def rewrite(call: Call, status: int, body: bytes) -> tuple[int, bytes]:
        if status != 200:
            return status, body
        if call.kind == "results":
            lines = [orjson.dumps(mutated_line(orjson.loads(line), rng)) if rng.random() < LINE_RATE else line
                     for line in body.splitlines() if line.strip()]
            return status, b"\n".join(lines) + b"\n"
        if call.kind in ("create", "retrieve", "list", "upload") and rng.random() < ANSWER_RATE:
            return status, orjson.dumps(mutated(orjson.loads(body), rng, keep=("id",)))
        return status, body

    return rewrite


@pytest.mark.parametrize("seed", SEEDS)
async def test_fuzzed_answers_end_the_run_with_a_message_and_lose_nothing_collected(sim, provider, tmp_path, seed):
    sim.config.processing_s = 0.05  # a few polls a batch: more answers to rewrite
    ids = write_requests(tmp_path / "in.jsonl", 300)
    out, inputs = str(tmp_path / "out"), [str(tmp_path / "in.jsonl")]
    changes = dict(batch_size=50, max_attempts=3, not_found_grace_s=1.0)
    async with RewritingProxy(sim.url, fuzzer(seed)) as proxy:
        fuzzed = await Engine(provider.settings(proxy.url, **changes), out, inputs, quiet=True).run()
    assert fuzzed.exit_code in (ExitCode.OK, ExitCode.FAILED), fuzzed.message
    assert fuzzed.message and "Traceback" not in fuzzed.message
    collected = ids_of(read_results(out))
    assert len(collected) == len(set(collected)), "a custom_id was written twice under the fuzzer"
    assert set(collected) <= set(ids)

    clean = await Engine(provider.settings(sim.url, **changes), out, inputs, quiet=True).run()
    assert clean.exit_code == ExitCode.OK, clean.message
    final = ids_of(read_results(out))
    assert sorted(final) == sorted(ids)  # every request exactly once
    assert set(collected) <= set(final)
