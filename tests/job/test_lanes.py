"""OpenAI batches hold one model: lines of several models are cut into one lane each, deterministically,
replayed by lane, retried by lane, and every request is answered once."""

from __future__ import annotations

import csv
import random

import orjson

import batch_scheduler
from batch_scheduler.core.settings import Settings
from batch_scheduler.job.input.batcher import LANE_HOLD, cut_chunks, one_lane
from batch_scheduler.job.input.reader import JsonlSource
from batch_scheduler.job.input.replay import Replay
from batch_scheduler.job.input.validate import Rejects, Validator
from batch_scheduler.providers.openai.provider import OpenAIProvider
from batch_scheduler.simulator import SimConfig
from batch_scheduler.state.ledger.sqlite import ChunkKind, Ledger

from ..helpers import ids_of, read_results

FAST = dict(poll_min=0.01, poll_max=0.05, shards=3, api_key="sk-lanes-test", provider="openai")


def chat(cid: str, model: str) -> dict:
    return {"custom_id": cid, "method": "POST", "url": "/v1/chat/completions",
            "body": {"model": model, "messages": [{"role": "user", "content": f"q {cid}"}]}}


def write_mixed(path, n: int, models: list[str], seed: int = 1) -> list[dict]:
    rng = random.Random(seed)
    lines = [chat(f"m-{i:04d}", rng.choice(models)) for i in range(n)]
    with open(path, "wb") as f:
        for i, line in enumerate(lines):
            f.write(orjson.dumps(line) + b"\n")
            if i == 17:
                f.write(b"{not json\n")  # a rejected line inside the lanes' spans
    return lines


class CountingValidator(Validator):
    """Counts the lines it accepted: what the cut has read into its open chunks, one line at a time."""

    accepted = 0

    def check(self, raw):
        cid, out, err = super().check(raw)
        self.accepted += err is None
        return cid, out, err


async def cut(path, provider, *, batch_size: int, spy: list | None = None):
    validator = CountingValidator(provider, 1 << 20)
    chunks = []
    async for c in cut_chunks(JsonlSource(str(path), 0).blocks(), validator, Rejects(None, [str(path)]),
                              batch_size=batch_size, batch_bytes=1 << 24, overhead=provider.body_overhead,
                              unit_of=lambda fi: "bytes"):
        if spy is not None:  # accepted lines not in a chunk closed before this one: what the open chunks hold
            spy.append(validator.accepted - sum(x.n for x in chunks))
        chunks.append(c)
    return chunks


def lane(line: bytes) -> str:
    return orjson.loads(line)["body"]["model"]


async def test_each_chunk_holds_one_model_the_cut_is_the_same_every_time_and_replays_by_lane(tmp_path):
    lines = write_mixed(tmp_path / "in.jsonl", 120, ["gpt-4o-mini", "gpt-4o"])
    provider = OpenAIProvider(Settings(provider="openai"), http=None)
    chunks = await cut(tmp_path / "in.jsonl", provider, batch_size=9)
    again = await cut(tmp_path / "in.jsonl", provider, batch_size=9)
    assert [(c.seq, c.start_pos, c.end_pos, c.ids) for c in chunks] == [
        (c.seq, c.start_pos, c.end_pos, c.ids) for c in again]
    assert [c.seq for c in chunks] == list(range(len(chunks)))
    assert all(len({lane(x) for x in c.lines}) == 1 for c in chunks)
    assert {lane(c.lines[0]) for c in chunks} == {"gpt-4o-mini", "gpt-4o"}
    assert sorted(cid for c in chunks for cid in c.ids) == sorted(x["custom_id"] for x in lines)
    assert all(c.n <= 9 for c in chunks)
    assert any((0, 19) in c.skipped for c in chunks)  # the bad line, listed in the chunks open around it

    ledger = Ledger(str(tmp_path / "ledger.db"))
    try:
        replay = Replay([JsonlSource(str(tmp_path / "in.jsonl"), 0)], provider.check_request, ledger,
                        lane_of=provider.lane_of)
        for c in chunks:
            chunk_id = await ledger.record_intent(kind=ChunkKind.INPUT, root_seq=c.seq, take=c.n, nbytes=c.nbytes,
                                                  span=(c.start_file, c.start_pos, c.start_line, c.end_file,
                                                        c.end_pos), skipped=c.skipped)
            parts = await replay.parts(await ledger.chunk(chunk_id))
            assert parts == [(x, i, n) for n, (x, i) in enumerate(zip(c.lines, c.ids, strict=True))]
    finally:
        ledger.close()


async def test_many_lanes_open_at_once_hold_at_most_two_batches_worth(tmp_path):
    models = [f"model-{k}" for k in range(12)]
    write_mixed(tmp_path / "in.jsonl", 400, models, seed=4)
    held: list[int] = []
    chunks = await cut(tmp_path / "in.jsonl", OpenAIProvider(Settings(provider="openai"), http=None), batch_size=5,
                       spy=held)
    assert max(held) == LANE_HOLD * 5 + 1  # at every close: the open chunks held at most 2 batches and a line
    assert all(len({lane(x) for x in c.lines}) == 1 and c.n <= 5 for c in chunks)
    assert sum(c.n for c in chunks) == 400


def test_a_retry_batch_takes_the_lane_of_its_first_request():
    provider = OpenAIProvider(Settings(provider="openai"), http=None)
    pending = [(f"r{i}", orjson.dumps(chat(f"r{i}", m)), 1) for i, m in enumerate(["a", "b", "a", "a", "b"])]
    assert [p[0] for p in one_lane(pending, provider.lane_of)] == ["r0", "r2", "r3"]
    assert one_lane(pending, None) == pending


async def test_an_openai_job_with_two_models_is_batched_per_model_and_answered_once(sim, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    sim.config = SimConfig(seed=9, errored_rate=0.15, lost_create_rate=0.2, cut_rate=0.1)
    rng = random.Random(2)
    rows = [(f"row-{i:03d}", f"text {i}", rng.choice(["gpt-4o-mini", "gpt-4.1-nano", ""])) for i in range(150)]
    with open(tmp_path / "rows.csv", "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([("id", "text", "model"), *rows])
    result = await batch_scheduler.arun(tmp_path / "rows.csv", tmp_path / "out", base_url=sim.url,
                                        template="Say: {text}", model="gpt-4o-mini", model_field="model",
                                        max_tokens=30, id_field="id", batch_size=20, max_attempts=8, **FAST)
    assert result.ok, result.message
    got = read_results(str(tmp_path / "out"))
    assert sorted(ids_of(got)) == [r[0] for r in rows]
    by_id = {r["custom_id"]: r["response"]["body"] for r in got}
    for cid, _, model in rows:
        assert by_id[cid]["choices"][0]["message"]["content"] == "answer:" + cid
        assert by_id[cid]["model"] == (model or "gpt-4o-mini")
    batches = list(sim.store.batches.values())
    assert all(len(set(b.models)) == 1 for b in batches)  # the simulator fails a batch of mixed models
    assert {b.models[0] for b in batches} == {"gpt-4o-mini", "gpt-4.1-nano"}
    assert result.summary["batches"]["failed"] == 0
    assert result.summary["attempts"]["requests_retried"] > 0  # retry batches, one model each, were sent
    models = result.summary["models"]
    assert {m: v["requests"] for m, v in models.items()} == {
        "gpt-4o-mini": sum(1 for r in rows if r[2] != "gpt-4.1-nano"),
        "gpt-4.1-nano": sum(1 for r in rows if r[2] == "gpt-4.1-nano")}


async def test_ready_openai_lines_of_two_models_are_sent_each_in_batches_of_its_own(sim, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    lines = write_mixed(tmp_path / "in.jsonl", 90, ["gpt-4o-mini", "gpt-4o"], seed=3)
    result = await batch_scheduler.arun(tmp_path / "in.jsonl", tmp_path / "out", base_url=sim.url, batch_size=25,
                                        **FAST)
    assert result.ok, result.message
    assert result.summary["requests"]["rejected"] == 1
    assert sorted(ids_of(read_results(str(tmp_path / "out")))) == sorted(x["custom_id"] for x in lines)
    assert all(len(set(b.models)) == 1 for b in sim.store.batches.values())
    per_model = [sum(1 for x in lines if x["body"]["model"] == m) for m in ("gpt-4o-mini", "gpt-4o")]
    assert len(sim.store.batches) == sum(-(-n // 25) for n in per_model)  # full batches of 25 in each lane
