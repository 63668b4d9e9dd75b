"""`--provider gemini` end to end against the simulator's Gemini Batch Mode: exactly once, faults and all."""

from __future__ import annotations

import orjson

from batch_scheduler.job.engine import Engine, ExitCode
from batch_scheduler.simulator import SimConfig

from ..conftest import fast_settings
from ..helpers import ids_of, read_results, request

MODELS = ("gemini-2.5-flash", "gemini-2.5-pro")


def write_mixed(path, n: int) -> list[str]:
    """Half the lines in Gemini's own form ({key, request}), half Message Batches lines; two models."""
    ids = []
    with open(path, "wb") as f:
        for i in range(n):
            cid, model = f"g-{i:05d}", MODELS[i % 2]
            if i % 4 < 2:
                line = {"key": cid, "request": {"model": f"models/{model}", "contents": [
                    {"role": "user", "parts": [{"text": f"question {i}"}]}], "generationConfig": {"maxOutputTokens": 40}}}
            else:
                line = request(cid, f"question {i}", model=model, max_tokens=40)
            f.write(orjson.dumps(line) + b"\n")
            ids.append(cid)
    return ids


async def run(settings, out, path):
    return await Engine(settings, str(out), [str(path)], quiet=True).run()


async def test_a_job_of_two_models_finishes_exactly_once_under_the_real_faults(sim, tmp_path):
    sim.config = SimConfig.real_faults(seed=13, expired_rate=0.4)  # drawn per batch: none of 12+ expiring is 0.2%
    ids = write_mixed(tmp_path / "in.jsonl", 1_200)
    settings = fast_settings(sim.url, provider="gemini", batch_size=100, max_attempts=6, max_unbilled_attempts=20)
    result = await run(settings, tmp_path / "out", tmp_path / "in.jsonl")
    assert result.exit_code == ExitCode.OK, result.message
    results = read_results(str(tmp_path / "out"))
    got = ids_of(results)
    assert len(got) == len(set(got)) and sorted(got) == ids
    assert all(r["response"]["candidates"][0]["content"]["parts"][0]["text"] == "answer:" + r["custom_id"]
               for r in results)
    assert {r["response"]["modelVersion"] for r in results} == set(MODELS)  # one model per batch: both lanes ran
    assert all(len(set(b.models)) == 1 for b in sim.store.batches.values())
    names = {b.extra["display_name"] for b in sim.store.batches.values()}
    assert len({n.split("-chunk-")[0] for n in names}) == 1  # every batch is named for this job
    summary = orjson.loads((tmp_path / "out" / "summary.json").read_bytes())
    assert summary["results"]["succeeded"] == 1_200 and summary["cost_usd"] > 0
    assert sim.stats["lost_creates"] == summary["batches"]["adopted"]  # found again by displayName
    assert any(b.extra["expired"] for b in sim.store.batches.values())  # expired batches were sent again


async def test_a_wrong_key_stops_the_run_as_a_refused_key(sim, tmp_path):
    sim.config = SimConfig(valid_keys={"the-right-key"})
    write_mixed(tmp_path / "in.jsonl", 10)
    result = await run(fast_settings(sim.url, provider="gemini"), tmp_path / "out", tmp_path / "in.jsonl")
    assert result.exit_code == ExitCode.AUTH == 3
    assert "GEMINI_API_KEY (or GOOGLE_API_KEY)" in result.message
    assert sim.stats["creates"] == 0


async def test_a_line_without_a_model_names_its_field(sim, tmp_path):
    (tmp_path / "in.jsonl").write_bytes(orjson.dumps({"key": "a", "request": {"contents": [{"parts": [{"text": "x"}]}]}})
                                        + b"\n")
    result = await run(fast_settings(sim.url, provider="gemini"), tmp_path / "out", tmp_path / "in.jsonl")
    assert result.exit_code == ExitCode.OK
    rejected = [orjson.loads(x) for x in (tmp_path / "out" / "rejected.jsonl").read_bytes().splitlines()]
    assert rejected[0]["custom_id"] == "a"
    assert rejected[0]["error"].startswith("request.model missing or not a model name (give --model or GEMINI_MODEL")


async def test_a_full_batch_jobs_quota_waits_for_a_batch_to_end_and_keeps_the_batch_size(sim, tmp_path):
    """A 429 about the project's concurrent batch jobs holds the next create until one of ours ends: the
    batches stay at --batch-size (the enqueued-token limit learns nothing from it), each request answered once."""
    sim.config = SimConfig(seed=7, processing_s=0.3, gemini_max_batches=3)
    ids = write_mixed(tmp_path / "in.jsonl", 1_000)
    settings = fast_settings(sim.url, provider="gemini", batch_size=100, concurrency=8, max_attempts=1)
    result = await run(settings, tmp_path / "out", tmp_path / "in.jsonl")
    assert result.exit_code == ExitCode.OK, result.message
    got = ids_of(read_results(str(tmp_path / "out")))
    assert len(got) == len(set(got)) and sorted(got) == ids
    batches = list(sim.store.batches.values())
    assert len(batches) == 10 and all(b.n == 100 for b in batches)  # never shrunk
    assert sim.stats["queue_full"] >= 1
    queue = result.summary["queue"]
    assert queue["queue_full_answers"] == sim.stats["queue_full"]
    assert queue["limits"]["batch jobs"]["limit"] == 3  # learned: what was in flight when it came
    assert all(queue["limits"][model]["ceiling"] is None for model in MODELS)  # the token limits learned nothing
