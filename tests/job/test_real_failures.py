"""What real providers do, end to end against the simulator: each finding of the real-failures issue.

Ghost 404s after create, requests missing from their results, OpenAI `request_timeout` lines, 409 and
504 among failing calls, the spend-limit 429, and `anthropic-version` 2026-10-21 refusing `temperature`.
"""

from __future__ import annotations

import orjson
import pytest

from batch_scheduler.job.engine import Engine, ExitCode
from batch_scheduler.simulator import SimConfig
from batch_scheduler.state.ledger.sqlite import Ledger

from ..conftest import fast_settings
from ..helpers import ids_of, read_results, request, write_requests


async def run_job(settings, out, inputs):
    return await Engine(settings, str(out), [str(p) for p in inputs], quiet=True).run()


def assert_exactly_once(out, expected_ids) -> list[dict]:
    results = read_results(str(out))
    got = ids_of(results)
    assert len(got) == len(set(got)), "a custom_id was written twice"
    assert sorted(got) == sorted(expected_ids)
    return results


def summary_of(out) -> dict:
    return orjson.loads((out / "summary.json").read_bytes())


async def test_a_404_for_the_first_moments_of_every_batch_is_waited_out(sim, provider, tmp_path):
    sim.config.ghost_404_s = 0.3
    ids = write_requests(tmp_path / "in.jsonl", 300)
    result = await run_job(provider.settings(sim.url), tmp_path / "out", [tmp_path / "in.jsonl"])
    assert result.exit_code == ExitCode.OK, result.message
    assert_exactly_once(tmp_path / "out", ids)
    assert sim.stats["ghost_404s"] > 0
    assert summary_of(tmp_path / "out")["polls"]["not_found"] > 0


async def test_a_batch_that_answers_404_past_the_grace_stops_the_run_naming_it_and_a_rerun_finishes(
        sim, tmp_path):
    sim.config.ghost_404_s = 3600
    ids = write_requests(tmp_path / "in.jsonl", 30)
    settings = fast_settings(sim.url, not_found_grace_s=0.2)
    first = await run_job(settings, tmp_path / "out", [tmp_path / "in.jsonl"])
    assert first.exit_code == ExitCode.FAILED and first.retry
    batch_id = next(iter(sim.store.batches))
    assert first.message == (
        f"stopped: batch {batch_id}: retrieve answered 404 not_found_error for more than 0.2 s "
        f"(--not-found-grace) since its create or its last answer; the ledger keeps the batch: run the same "
        f"command again to look for it again. Nothing is lost: run the same command again to resume")
    sim.config.ghost_404_s = 0
    second = await run_job(settings, tmp_path / "out", [tmp_path / "in.jsonl"])
    assert second.exit_code == ExitCode.OK, second.message
    assert_exactly_once(tmp_path / "out", ids)
    assert sim.stats["requests_created"] == 30  # the batch was polled again, not sent again


async def test_requests_missing_from_their_results_are_sent_again_and_counted(sim, provider, tmp_path):
    sim.config.missing_rate = 0.005
    ids = write_requests(tmp_path / "in.jsonl", 2_000)
    result = await run_job(provider.settings(sim.url), tmp_path / "out", [tmp_path / "in.jsonl"])
    assert result.exit_code == ExitCode.OK, result.message
    assert_exactly_once(tmp_path / "out", ids)
    summary = summary_of(tmp_path / "out")
    assert sim.stats["missing_results"] > 0
    assert summary["requests"]["missing_from_results"] == sim.stats["missing_results"]
    assert summary["results"]["succeeded"] == 2_000


async def test_a_batch_recorded_by_an_earlier_version_is_checked_against_its_input(sim, tmp_path):
    import asyncio
    import time
    sim.config.processing_s = 3600
    sim.config.missing_rate = 0.05
    ids = write_requests(tmp_path / "in.jsonl", 300)
    out = tmp_path / "out"
    task = asyncio.create_task(run_job(fast_settings(sim.url), out, [tmp_path / "in.jsonl"]))
    while sim.stats["creates"] < 3:
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    ledger = Ledger(str(out / "ledger.db"))
    ledger.sync(lambda db: db.execute("DELETE FROM chunk_ids"))  # as a version without the table left them
    ledger.close()
    sim.clock = lambda: time.monotonic() + 7200  # the batches in flight have ended meanwhile
    sim.config.processing_s = 0
    result = await run_job(fast_settings(sim.url), out, [tmp_path / "in.jsonl"])
    assert result.exit_code == ExitCode.OK, result.message
    assert_exactly_once(out, ids)
    assert summary_of(out)["requests"]["missing_from_results"] == sim.stats["missing_results"] > 0


async def test_openai_request_timeout_lines_get_another_attempt(sim, tmp_path):
    sim.config.request_timeout_rate = 0.2
    ids = write_requests(tmp_path / "in.jsonl", 300)
    settings = fast_settings(sim.url, provider="openai", auth="bearer")
    result = await run_job(settings, tmp_path / "out", [tmp_path / "in.jsonl"])
    assert result.exit_code == ExitCode.OK, result.message
    results = assert_exactly_once(tmp_path / "out", ids)
    assert sim.stats["request_timeouts"] > 0
    assert all(r["error"] is None and r["response"]["status_code"] == 200 for r in results)
    assert summary_of(tmp_path / "out")["attempts"]["requests_retried"] == sim.stats["request_timeouts"]


@pytest.mark.parametrize("kind", ["conflict_error", "timeout_error"])
async def test_409_and_504_answers_are_retried(sim, provider, tmp_path, kind):
    # at 0.3, about one run in 300 had a chunk meet UNKNOWN_RESENDS + 1 lost create answers in a row (0.3 ** 7 a chunk)
    # and the job stopped, resumable, as it should; this test is about the retries, not that stop
    sim.config.fail_rate = 0.2
    sim.config.fail_kinds = [kind]
    ids = write_requests(tmp_path / "in.jsonl", 300)
    # batches of 20: enough calls that faults are drawn for a provider that makes few (Gemini's inline batches)
    settings = provider.settings(sim.url, batch_size=20)
    result = await run_job(settings, tmp_path / "out", [tmp_path / "in.jsonl"])
    assert result.exit_code == ExitCode.OK, result.message
    assert_exactly_once(tmp_path / "out", ids)
    assert sim.stats["faults"][kind] > 0
    assert sim.stats["requests_created"] <= 300 * 1.05


_USAGE_LIMITS = "You have reached your specified API usage limits. You will regain access on "
SPEND_LIMIT_SAID = {"anthropic": f"rate_limit_error: {_USAGE_LIMITS}", "google": f"RESOURCE_EXHAUSTED: {_USAGE_LIMITS}",
                    "openai": "insufficient_quota: You exceeded your current quota"}  # by whose error bodies


async def test_a_spend_limit_stops_sending_collects_what_is_in_flight_and_exits_with_its_own_code(
        sim, provider, tmp_path):
    sim.config.processing_s = 0.3
    sim.config.spend_cap = 200  # two batches go out; the third create gets the spend-limit 429
    ids = write_requests(tmp_path / "in.jsonl", 1_000)
    settings = provider.settings(sim.url, concurrency=2)
    first = await run_job(settings, tmp_path / "out", [tmp_path / "in.jsonl"])
    assert first.exit_code == ExitCode.SPEND_LIMIT == 5
    said = SPEND_LIMIT_SAID[provider.errors_like]
    assert first.message.startswith(f"the provider's spend limit is reached: POST create: HTTP 429 {said}")
    assert first.message.endswith("Nothing is lost: run the same command again once access resumes (800 request(s) "
                                  "not sent; every batch in flight was collected)")
    assert len(read_results(str(tmp_path / "out"))) == 200, "what was in flight is collected"
    summary = summary_of(tmp_path / "out")
    assert summary["state"] == "paused" and summary["exit_code"] == 5
    assert sim.stats["spend_limited"] >= 1
    spend_limited = sim.stats["spend_limited"]
    assert spend_limited <= 2, "a spend limit is not retried"
    sim.config.spend_cap = None
    second = await run_job(settings, tmp_path / "out", [tmp_path / "in.jsonl"])
    assert second.exit_code == ExitCode.OK, second.message
    assert_exactly_once(tmp_path / "out", ids)
    assert sim.stats["requests_created"] == 1_000


# -- versions --------------------------------------------------------------------------------------

def requests_with_temperature(path, n: int) -> list[str]:
    ids = []
    with open(path, "wb") as f:
        for i in range(n):
            line = request(f"t-{i:03d}")
            if i % 10 == 3:
                line["params"]["temperature"] = 0.2
            else:
                ids.append(line["custom_id"])
            f.write(orjson.dumps(line) + b"\n")
    return ids


async def test_under_2026_10_21_a_line_with_temperature_is_rejected_locally_with_file_line_and_reason(sim, tmp_path):
    kept = requests_with_temperature(tmp_path / "in.jsonl", 50)
    settings = fast_settings(sim.url)
    assert settings.anthropic_version == "2026-10-21"  # the default: what the official SDK sends
    result = await run_job(settings, tmp_path / "out", [tmp_path / "in.jsonl"])
    assert result.exit_code == ExitCode.OK, result.message
    assert_exactly_once(tmp_path / "out", kept)
    rejected = [orjson.loads(x) for x in (tmp_path / "out" / "rejected.jsonl").read_bytes().splitlines()]
    assert [(r["line"], r["custom_id"]) for r in rejected] == [(4 + 10 * k, f"t-{3 + 10 * k:03d}") for k in range(5)]
    assert rejected[0] == {
        "file": str(tmp_path / "in.jsonl"), "line": 4, "custom_id": "t-003",
        "error": "params.temperature is not accepted under anthropic-version 2026-10-21, which removed "
                 "temperature, top_p and top_k; remove it, or run the job with --anthropic-version 2023-06-01"}
    assert sim.stats["requests_created"] == 45  # nothing the version refuses was paid for
    assert summary_of(tmp_path / "out")["results"] == {"succeeded": 45, "errored": 0, "expired": 0, "canceled": 0}


async def test_strict_refuses_a_2026_10_21_job_with_temperature_before_sending_anything(sim, tmp_path):
    requests_with_temperature(tmp_path / "in.jsonl", 20)
    result = await run_job(fast_settings(sim.url, strict=True), tmp_path / "out", [tmp_path / "in.jsonl"])
    assert result.exit_code == ExitCode.FAILED
    assert result.message.endswith("2 bad line(s), listed in " + str(tmp_path / "out") + "/rejected.jsonl; "
                                   "nothing was submitted")
    assert sim.stats["creates"] == 0


async def stopped_after_one_batch(sim, settings, out, inputs, remembered=None):
    """The job's first run, ended after one batch of 10 by the provider's spend limit."""
    sim.config.spend_cap = 10
    engine = Engine(settings.replace(batch_size=10), str(out), [str(p) for p in inputs], quiet=True,
                    remembered=remembered or {})
    result = await engine.run()
    assert result.exit_code == ExitCode.SPEND_LIMIT, result.message
    sim.config.spend_cap = None


async def test_anthropic_version_2023_06_01_keeps_working_and_the_job_keeps_its_version(sim, tmp_path):
    ids = [f"t-{i:03d}" for i in range(50)]
    requests_with_temperature(tmp_path / "in.jsonl", 50)
    out = tmp_path / "out"
    await stopped_after_one_batch(sim, fast_settings(sim.url, anthropic_version="2023-06-01"), out,
                                  [tmp_path / "in.jsonl"], remembered={"anthropic_version": "2023-06-01"})
    # resumed with the new default in its settings: it keeps the version it started with
    second = await run_job(fast_settings(sim.url, batch_size=10), out, [tmp_path / "in.jsonl"])
    assert second.exit_code == ExitCode.OK, second.message
    results = assert_exactly_once(out, ids)
    assert {r["result"]["type"] for r in results} == {"succeeded"}  # temperature was accepted under 2023-06-01
    ledger = Ledger(str(out / "ledger.db"), readonly=True)
    try:
        assert ledger.read_meta()["anthropic_version"] == "2023-06-01"
    finally:
        ledger.close()


async def test_a_job_started_before_the_ledger_kept_its_version_keeps_the_old_default(sim, tmp_path):
    ids = [f"t-{i:03d}" for i in range(20)]
    requests_with_temperature(tmp_path / "in.jsonl", 20)
    out = tmp_path / "out"
    await stopped_after_one_batch(sim, fast_settings(sim.url, anthropic_version="2023-06-01"), out,
                                  [tmp_path / "in.jsonl"])
    ledger = Ledger(str(out / "ledger.db"))
    ledger.sync(lambda db: db.execute("DELETE FROM meta WHERE key='anthropic_version'"))  # as an older version left it
    ledger.close()
    result = await run_job(fast_settings(sim.url, batch_size=10), out, [tmp_path / "in.jsonl"])
    assert result.exit_code == ExitCode.OK, result.message
    results = assert_exactly_once(out, ids)
    assert {r["result"]["type"] for r in results} == {"succeeded"}


# -- the acceptance mix, at test size --------------------------------------------------------------

async def test_with_the_real_faults_and_default_attempts_no_request_is_left_with_a_transient_answer(
        sim, provider, tmp_path):
    sim.config = SimConfig.real_faults(seed=provider.fault_seed, ghost_404_s=0.3)  # a shorter ghost: a faster test
    ids = write_requests(tmp_path / "in.jsonl", 2_000)
    settings = provider.settings(sim.url)  # default --max-attempts and --max-unbilled-attempts
    assert (settings.max_attempts, settings.max_unbilled_attempts) == (3, 8)
    result = await run_job(settings, tmp_path / "out", [tmp_path / "in.jsonl"])
    assert result.exit_code == ExitCode.OK, result.message
    results = assert_exactly_once(tmp_path / "out", ids)
    summary = summary_of(tmp_path / "out")
    assert summary["errored_after_all_attempts"] == 0
    assert summary["results"]["succeeded"] == 2_000
    assert all(provider.answer(r) == "answer:" + r["custom_id"] for r in results)
    missing = summary["requests"]["missing_from_results"]
    if provider.name == "inline" and sim.stats["lost_creates"]:
        # inline batches carry nothing to be adopted by: a lost create's batch is made again, and the
        # simulator also counts the missing requests of the one nobody collects
        assert 0 < missing <= sim.stats["missing_results"]
    else:
        # a Gemini batch that expires has no results at all (its requests are missing, unbilled, and sent
        # again); the simulator counted the lines it drew as missing in it already
        expired = sum(b.n - len(b.missing) for b in sim.store.batches.values()
                      if b.kind == "gemini" and b.extra.get("expired"))
        assert missing == sim.stats["missing_results"] + expired and sim.stats["missing_results"] > 0
    assert sim.stats["ghost_404s"] > 0
