"""Admission against the simulator's queue limits: learned from the provider's answers, kept, never passed."""

from __future__ import annotations

import asyncio

import aiohttp

from batch_scheduler.core.errors import ExitCode
from batch_scheduler.job.admit.queue_budget import QueuePool
from batch_scheduler.job.engine import Engine
from batch_scheduler.job.view.status import job_status
from batch_scheduler.simulator import SimConfig

from ..conftest import KEY, fast_settings
from ..helpers import ids_of, read_results, write_requests


def settings(sim, **changes):
    return fast_settings(sim.url, **{"batch_size": 100, "concurrency": 64, **changes})


async def run(s, out, inp, pool=None):
    return await Engine(s, str(out), [str(inp)], quiet=True, queues=pool).run()


def exactly_once(out, ids):
    got = ids_of(read_results(str(out)))
    assert len(got) == len(set(got)) and sorted(got) == sorted(ids)


async def test_a_queue_limit_below_the_start_is_learned_from_one_queue_full_answer(sim, tmp_path):
    sim.config = SimConfig(seed=3, queue_limit=500, processing_s=0.3)
    ids = write_requests(tmp_path / "in.jsonl", 3_000)
    result = await run(settings(sim), tmp_path / "out", tmp_path / "in.jsonl")
    assert result.exit_code == ExitCode.OK, result.message
    exactly_once(tmp_path / "out", ids)
    assert sim.stats["queue_full"] == 1 and sim.stats["peak_queued_requests"] == 500
    queue = result.summary["queue"]
    assert queue["limits"]["requests"]["limit"] == 500 and queue["limits"]["requests"]["stated"] == 500
    assert queue["queue_full_answers"] == 1
    assert result.summary["attempts"]["after_1_attempts"] == 3_000  # the refused batch used no attempt
    assert result.summary["attempts"]["requests_sent"] == 3_000


async def test_a_queue_limit_above_the_start_is_grown_into(sim, tmp_path):
    sim.config = SimConfig(seed=3, queue_limit=800, processing_s=1.0)  # long enough to fill under load
    ids = write_requests(tmp_path / "in.jsonl", 4_000)
    result = await run(settings(sim), tmp_path / "out", tmp_path / "in.jsonl", QueuePool(start=300))
    assert result.exit_code == ExitCode.OK, result.message
    exactly_once(tmp_path / "out", ids)
    assert sim.stats["peak_queued_requests"] == 800  # past the start of 300, up to the provider's limit
    assert sim.stats["queue_full"] <= 1
    assert result.summary["queue"]["limits"]["requests"]["limit"] == 800


async def test_the_hard_cap_is_never_passed_and_a_queue_that_holds_more_is_not_probed(sim, tmp_path):
    # the provider's queue holds anything; batches last long enough that the cap fills however loaded the machine
    sim.config = SimConfig(seed=3, processing_s=1.0)
    ids = write_requests(tmp_path / "in.jsonl", 2_000)
    result = await run(settings(sim, max_queued_requests=300), tmp_path / "out", tmp_path / "in.jsonl")
    assert result.exit_code == ExitCode.OK, result.message
    exactly_once(tmp_path / "out", ids)
    assert sim.stats["peak_queued_requests"] == 300 and sim.stats["queue_full"] == 0
    assert result.summary["queue"]["hard_cap"] == 300


async def test_openai_learns_its_models_token_limit_from_the_failed_batch_and_no_request_uses_an_attempt(
        sim, tmp_path):
    # each request is 11 tokens as the simulator counts them: a 250-request batch is 2,750 tokens
    sim.config = SimConfig(seed=3, enqueued_token_limit=7_000, processing_s=0.3)
    ids = write_requests(tmp_path / "in.jsonl", 3_000)
    s = settings(sim, provider="openai", auth="bearer", batch_size=250, max_attempts=1)
    result = await run(s, tmp_path / "out", tmp_path / "in.jsonl")
    assert result.exit_code == ExitCode.OK, result.message
    exactly_once(tmp_path / "out", ids)
    queue = result.summary["queue"]
    assert 1 <= queue["token_limit_failures"] == sim.stats["token_limit_failures"] <= 2
    assert queue["limits"]["claude-sonnet-4-5"]["stated"] == 7_000
    assert sim.stats["peak_enqueued_tokens"] <= 7_000
    assert result.summary["attempts"]["after_1_attempts"] == 3_000  # with --max-attempts 1, none was lost
    assert result.summary["batches"]["failed"] == 0


async def test_a_resumed_run_starts_from_the_limit_the_first_learned(sim, tmp_path):
    sim.config = SimConfig(seed=3, queue_limit=400, processing_s=5)  # the first run's batches outlast it
    ids = write_requests(tmp_path / "in.jsonl", 3_000)
    out = tmp_path / "out"
    first = asyncio.ensure_future(run(settings(sim), out, tmp_path / "in.jsonl"))
    while not (out / "ledger.db").exists() or not job_status(str(out))["queue"]["queue_full_answers"]:
        assert not first.done(), "the first run ended without meeting the queue's limit"
        await asyncio.sleep(0.01)  # the first run learns the limit (its ledger says so) ...
    sim.config.processing_s = 0.3
    sim.config.valid_keys = {"sk-another"}  # ... and stops on a refused key
    assert (await first).exit_code == ExitCode.AUTH
    status = job_status(str(out))["queue"]
    assert status["queues"]["requests"]["limit"] == 400 and status["queue_full_answers"] == 1
    assert status["queues"]["requests"]["queued"] > 0  # what the first run left at the provider, as far as it saw
    now = sim.ctx.now()
    assert sum(b.n for b in sim.store.batches.values() if not b.ended(now)) <= 400  # and what is really there
    sim.config.valid_keys = {KEY}
    second = await run(settings(sim), out, tmp_path / "in.jsonl")
    assert second.exit_code == ExitCode.OK, second.message
    exactly_once(out, ids)
    assert sim.stats["queue_full"] == 1  # the resumed run knew: no queue-full answer of its own
    assert second.summary["queue"]["queue_full_answers_this_run"] == 0
    assert sim.stats["peak_queued_requests"] == 400


async def test_a_spend_limit_429_is_not_taken_for_a_small_queue(sim, tmp_path):
    sim.config = SimConfig(seed=3, spend_cap=300, processing_s=0.1)
    write_requests(tmp_path / "in.jsonl", 1_000)
    result = await run(settings(sim), tmp_path / "out", tmp_path / "in.jsonl")
    assert result.exit_code != ExitCode.OK and sim.stats["spend_limited"] >= 1
    queue = result.summary["queue"]
    assert queue["queue_full_answers"] == 0
    assert queue["limits"]["requests"]["ceiling"] is None and queue["limits"]["requests"]["limit"] == 200_000


async def test_a_queue_full_of_others_work_teaches_nothing_and_a_run_that_never_gets_in_stops_resumable(
        sim, tmp_path):
    sim.config = SimConfig(seed=3, queue_limit=500, processing_s=60)
    others = {"requests": [{"custom_id": f"o{i}", "params": {"model": "m", "max_tokens": 8, "messages": [
        {"role": "user", "content": "theirs"}]}} for i in range(500)]}
    async with aiohttp.ClientSession() as http:  # another user of the account fills its queue
        async with http.post(f"{sim.url}/v1/messages/batches", json=others,
                             headers={"x-api-key": KEY, "anthropic-version": "2023-06-01"}) as resp:
            assert resp.status == 200
    write_requests(tmp_path / "in.jsonl", 300)
    result = await run(settings(sim), tmp_path / "out", tmp_path / "in.jsonl")
    assert result.exit_code == ExitCode.FAILED and result.retry
    assert result.message == ("stopped: the provider's queue (requests) stayed full with nothing of this job in "
                              "it: 10 queue-full answers in a row. Nothing is lost: run the same command again to "
                              "resume")
    limits = result.summary["queue"]["limits"]["requests"]
    assert limits["ceiling"] is None and limits["limit"] == 200_000  # not mistaken for a small queue
    assert sim.stats["queue_full"] == 10
