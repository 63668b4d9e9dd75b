"""The main job end to end against the in-process simulator: every request answered exactly once."""

from __future__ import annotations

import os

import orjson
import pytest

from batch_scheduler.job.engine import Engine, ExitCode
from batch_scheduler.simulator import SimConfig

from .conftest import KEY, fast_settings
from .helpers import ids_of, read_results, request, write_requests

TRANSIENT = {"api_error", "overloaded_error"}


async def run_job(settings, out, inputs):
    return await Engine(settings, str(out), [str(p) for p in inputs], quiet=True).run()


def assert_exactly_once(out, expected_ids):
    results = read_results(str(out))
    got = ids_of(results)
    assert len(got) == len(set(got)), "a custom_id was written twice"
    assert sorted(got) == sorted(expected_ids)
    return results


async def test_every_request_is_answered_exactly_once_with_its_own_answer(sim, tmp_path):
    ids = write_requests(tmp_path / "in.jsonl", 1_000)
    result = await run_job(fast_settings(sim.url), tmp_path / "out", [tmp_path / "in.jsonl"])
    assert result.exit_code == ExitCode.OK, result.message
    results = assert_exactly_once(tmp_path / "out", ids)
    for r in results:
        assert r["result"]["type"] == "succeeded"
        assert r["result"]["message"]["content"][0]["text"] == "answer:" + r["custom_id"]
    summary = orjson.loads((tmp_path / "out" / "summary.json").read_bytes())
    assert summary["results"]["succeeded"] == 1_000
    assert summary["requests"]["accepted"] == 1_000
    assert summary["batches"]["created"] == 10
    assert summary["tokens"]["output"] == sum(r["result"]["message"]["usage"]["output_tokens"] for r in results)
    assert summary["cost_usd"] > 0


async def test_with_every_fault_on_each_custom_id_comes_back_once_and_no_transient_error_is_left(sim, tmp_path):
    sim.config = SimConfig.all_faults(seed=7)
    ids = write_requests(tmp_path / "in.jsonl", 3_000)
    settings = fast_settings(sim.url, batch_size=150, max_attempts=5)
    result = await run_job(settings, tmp_path / "out", [tmp_path / "in.jsonl"])
    assert result.exit_code == ExitCode.OK, result.message
    results = assert_exactly_once(tmp_path / "out", ids)
    for r in results:
        res = r["result"]
        assert res["type"] == "succeeded", r
        assert res["message"]["content"][0]["text"] == "answer:" + r["custom_id"]
    summary = orjson.loads((tmp_path / "out" / "summary.json").read_bytes())
    assert summary["attempts"]["requests_retried"] > 0
    assert summary["http"]["retries"] + summary["http"]["results_downloads_restarted"] > 0
    paid = sim.stats["requests_created"]
    assert paid <= 1.05 * 3_000 + summary["attempts"]["requests_retried"], (paid, summary["attempts"])


async def test_retries_stop_at_max_attempts_and_the_last_errored_line_is_final(sim, tmp_path):
    sim.config.errored_rate = 1.0
    ids = write_requests(tmp_path / "in.jsonl", 50)
    result = await run_job(fast_settings(sim.url, max_attempts=2), tmp_path / "out", [tmp_path / "in.jsonl"])
    assert result.exit_code == ExitCode.OK, result.message
    results = assert_exactly_once(tmp_path / "out", ids)
    assert {r["result"]["error"]["error"]["type"] for r in results} <= TRANSIENT
    summary = orjson.loads((tmp_path / "out" / "summary.json").read_bytes())
    assert summary["attempts"]["requests_sent"] == 100  # two attempts each
    assert summary["attempts"]["after_2_attempts"] == 50


async def test_permanent_errors_are_final_at_once(sim, tmp_path):
    sim.config.invalid_rate = 1.0
    ids = write_requests(tmp_path / "in.jsonl", 30)
    result = await run_job(fast_settings(sim.url), tmp_path / "out", [tmp_path / "in.jsonl"])
    assert result.exit_code == ExitCode.OK
    results = assert_exactly_once(tmp_path / "out", ids)
    assert {r["result"]["error"]["error"]["type"] for r in results} == {"invalid_request_error"}
    assert orjson.loads((tmp_path / "out" / "summary.json").read_bytes())["attempts"]["requests_sent"] == 30


async def test_several_input_files_form_one_job_and_bad_lines_do_not_stop_it(sim, tmp_path):
    a = write_requests(tmp_path / "a.jsonl", 120, prefix="a")
    b = write_requests(tmp_path / "b.jsonl", 80, prefix="b")
    with open(tmp_path / "b.jsonl", "ab") as f:
        f.write(b"not json\n" + orjson.dumps(request("a-000001")) + b"\n")
    result = await run_job(fast_settings(sim.url), tmp_path / "out", [tmp_path / "a.jsonl", tmp_path / "b.jsonl"])
    assert result.exit_code == ExitCode.OK, result.message
    assert_exactly_once(tmp_path / "out", a + b)
    rejected = [orjson.loads(x) for x in (tmp_path / "out" / "rejected.jsonl").read_bytes().splitlines()]
    assert [(os.path.basename(r["file"]), r["line"]) for r in rejected] == [("b.jsonl", 81), ("b.jsonl", 82)]


async def test_a_413_splits_the_batch_until_it_fits(sim, tmp_path):
    sim.config.max_body_bytes = 6_000  # a 413 is for bytes; too many requests is a 400
    ids = write_requests(tmp_path / "in.jsonl", 200)
    result = await run_job(fast_settings(sim.url), tmp_path / "out", [tmp_path / "in.jsonl"])
    assert result.exit_code == ExitCode.OK, result.message
    assert_exactly_once(tmp_path / "out", ids)
    assert sim.stats["requests_created"] == 200  # split batches are paid once


async def test_lost_create_answers_are_adopted_not_paid_twice(sim, tmp_path):
    sim.config.lost_create_rate = 0.3
    ids = write_requests(tmp_path / "in.jsonl", 2_000)
    result = await run_job(fast_settings(sim.url), tmp_path / "out", [tmp_path / "in.jsonl"])
    assert result.exit_code == ExitCode.OK, result.message
    assert_exactly_once(tmp_path / "out", ids)
    summary = orjson.loads((tmp_path / "out" / "summary.json").read_bytes())
    assert summary["batches"]["adopted"] > 0
    assert sim.stats["requests_created"] == 2_000


async def test_a_refused_key_exits_3_fast_and_the_right_key_finishes(sim, tmp_path):
    sim.config.valid_keys = {"sk-right"}
    ids = write_requests(tmp_path / "in.jsonl", 300)
    out = tmp_path / "out"
    result = await run_job(fast_settings(sim.url, api_key=KEY), out, [tmp_path / "in.jsonl"])
    assert result.exit_code == ExitCode.AUTH
    assert "refused the key" in result.message and KEY not in result.message
    result = await run_job(fast_settings(sim.url, api_key="sk-right"), out, [tmp_path / "in.jsonl"])
    assert result.exit_code == ExitCode.OK, result.message
    assert_exactly_once(out, ids)
    for root, _, files in os.walk(out):
        for name in files:
            with open(os.path.join(root, name), "rb") as f:
                data = f.read()
            assert KEY.encode() not in data and b"sk-right" not in data, name


async def test_another_input_under_the_same_out_is_refused(sim, tmp_path):
    write_requests(tmp_path / "in.jsonl", 10)
    write_requests(tmp_path / "other.jsonl", 10, prefix="o")
    assert (await run_job(fast_settings(sim.url), tmp_path / "out", [tmp_path / "in.jsonl"])).exit_code == 0
    result = await run_job(fast_settings(sim.url), tmp_path / "out", [tmp_path / "other.jsonl"])
    assert result.exit_code == ExitCode.USAGE
    assert "holds a job over other input files" in result.message


async def test_other_batch_options_under_the_same_out_are_refused(sim, tmp_path):
    write_requests(tmp_path / "in.jsonl", 10)
    assert (await run_job(fast_settings(sim.url), tmp_path / "out", [tmp_path / "in.jsonl"])).exit_code == 0
    result = await run_job(fast_settings(sim.url, batch_size=7), tmp_path / "out", [tmp_path / "in.jsonl"])
    assert result.exit_code == ExitCode.USAGE
    assert "batch_size: was 100, now 7" in result.message


async def test_a_finished_job_run_again_writes_nothing_twice(sim, tmp_path):
    ids = write_requests(tmp_path / "in.jsonl", 250)
    for _ in range(2):
        result = await run_job(fast_settings(sim.url), tmp_path / "out", [tmp_path / "in.jsonl"])
        assert result.exit_code == ExitCode.OK
    assert_exactly_once(tmp_path / "out", ids)
    assert sim.stats["requests_created"] == 250


async def test_strict_refuses_the_whole_job_when_a_line_is_bad(sim, tmp_path):
    write_requests(tmp_path / "in.jsonl", 20)
    with open(tmp_path / "in.jsonl", "ab") as f:
        f.write(b'{"custom_id": "x"}\n')
    result = await run_job(fast_settings(sim.url, strict=True), tmp_path / "out", [tmp_path / "in.jsonl"])
    assert result.exit_code == ExitCode.FAILED
    assert "--strict: 1 bad line(s)" in result.message
    assert sim.stats["creates"] == 0


async def test_max_cost_stops_new_batches_and_the_job_stays_resumable(sim, tmp_path):
    ids = write_requests(tmp_path / "in.jsonl", 500)
    settings = fast_settings(sim.url, max_cost_usd=0.001, concurrency=1)
    result = await run_job(settings, tmp_path / "out", [tmp_path / "in.jsonl"])
    assert result.exit_code == ExitCode.FAILED
    assert "stopped at --max-cost $0.00" in result.message
    assert sim.stats["requests_created"] < 500
    result = await run_job(fast_settings(sim.url, max_cost_usd=100.0, concurrency=1), tmp_path / "out",
                           [tmp_path / "in.jsonl"])
    assert result.exit_code == ExitCode.OK, result.message
    assert_exactly_once(tmp_path / "out", ids)


@pytest.mark.parametrize("stop_after_collected", [1, 3])
async def test_a_run_stopped_midway_resumes_without_losing_or_repeating(sim, tmp_path, stop_after_collected):
    import asyncio
    sim.config.processing_s = 0.05
    ids = write_requests(tmp_path / "in.jsonl", 1_000)
    engine = Engine(fast_settings(sim.url, concurrency=2), str(tmp_path / "out"), [str(tmp_path / "in.jsonl")],
                    quiet=True)
    task = asyncio.create_task(engine.run())
    while sim.stats.get("results_downloads", 0) < stop_after_collected:
        await asyncio.sleep(0.005)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    result = await run_job(fast_settings(sim.url, concurrency=2), tmp_path / "out", [tmp_path / "in.jsonl"])
    assert result.exit_code == ExitCode.OK, result.message
    assert_exactly_once(tmp_path / "out", ids)
    assert sim.stats["requests_created"] <= 1_000 + 100  # at most one chunk's create was in doubt


async def test_a_400_naming_one_request_rejects_it_and_sends_the_rest(sim, tmp_path):
    sim.config.params_at_create = True  # the real API answers bad params as errored results; proxies may not
    ids = write_requests(tmp_path / "in.jsonl", 150)
    bad = request("hot-1")
    bad["params"]["temperature"] = 1.5
    with open(tmp_path / "in.jsonl", "ab") as f:
        f.write(orjson.dumps(bad) + b"\n")
    result = await run_job(fast_settings(sim.url), tmp_path / "out", [tmp_path / "in.jsonl"])
    assert result.exit_code == ExitCode.OK, result.message
    assert_exactly_once(tmp_path / "out", ids)
    rejected = [orjson.loads(x) for x in (tmp_path / "out" / "rejected.jsonl").read_bytes().splitlines()]
    assert len(rejected) == 1 and rejected[0]["custom_id"] == "hot-1"
    assert "refused by the API" in rejected[0]["error"] and "temperature" in rejected[0]["error"]
    summary = orjson.loads((tmp_path / "out" / "summary.json").read_bytes())
    assert summary["requests"]["refused_by_api"] == 1
    # a second run reports the refusal again and sends nothing
    creates = sim.stats["creates"]
    assert (await run_job(fast_settings(sim.url), tmp_path / "out", [tmp_path / "in.jsonl"])).exit_code == 0
    assert sim.stats["creates"] == creates
    assert len((tmp_path / "out" / "rejected.jsonl").read_bytes().splitlines()) == 1
