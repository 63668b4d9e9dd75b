"""Queue admission with Gemini's and Azure's enqueued-token limits: the limit the provider states is learned
per model (per deployment on Azure), and the batches it refused go again without using an attempt."""

from __future__ import annotations

from batch_scheduler.job.engine import Engine, ExitCode
from batch_scheduler.simulator import SimConfig

from ..conftest import fast_settings
from ..helpers import ids_of, read_results, write_requests

LIMIT = 2_000  # enqueued input tokens per model; a batch of 100 requests is about 1,100 of them


async def run_exactly_once(sim, tmp_path, model: str, **changes):
    ids = write_requests(str(tmp_path / "in.jsonl"), 1_000, model=model)
    settings = fast_settings(sim.url, batch_size=100, concurrency=64, max_attempts=1, **changes)
    result = await Engine(settings, str(tmp_path / "out"), [str(tmp_path / "in.jsonl")], quiet=True).run()
    assert result.exit_code == ExitCode.OK, result.message
    got = ids_of(read_results(str(tmp_path / "out")))
    assert len(got) == len(set(got)) and sorted(got) == ids
    assert result.summary["attempts"]["after_1_attempts"] == 1_000  # with --max-attempts 1, none was lost
    assert sim.stats["token_limit_failures"] >= 1  # the limit was met
    assert sim.stats["peak_enqueued_tokens"] <= LIMIT
    return result.summary["queue"]


async def test_gemini_learns_its_models_enqueued_token_limit_from_the_429_and_uses_no_attempt(sim, tmp_path):
    sim.config = SimConfig(seed=3, enqueued_token_limit=LIMIT, processing_s=0.3)
    queue = await run_exactly_once(sim, tmp_path, "gemini-2.5-flash", provider="gemini")
    assert queue["unit"] == "tokens" and queue["limits"]["gemini-2.5-flash"]["stated"] == LIMIT
    assert queue["queue_full_answers"] == sim.stats["token_limit_failures"]  # a 429 at create: the queue is full
    assert sim.stats["requests_created"] == 1_000  # a refused create is not billed, and was not sent twice


async def test_azure_learns_its_deployments_enqueued_token_limit_from_the_failed_batch_and_uses_no_attempt(
        sim, tmp_path):
    sim.config = SimConfig(seed=3, enqueued_token_limit=LIMIT, processing_s=0.3)
    queue = await run_exactly_once(sim, tmp_path, "gpt-4o-mini", provider="azure", auth="api-key")
    assert queue["unit"] == "tokens" and queue["limits"]["gpt-4o-mini"]["stated"] == LIMIT
    assert queue["token_limit_failures"] == sim.stats["token_limit_failures"]  # accepted, then failed whole
