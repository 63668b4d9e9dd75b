"""The main job end to end against the in-process simulator: every request answered exactly once."""

from __future__ import annotations

import asyncio
import os

import orjson
import pytest

from batch_scheduler.job.engine import Engine, ExitCode
from batch_scheduler.simulator import SimConfig

from ..conftest import KEY, fast_settings
from ..helpers import ids_of, read_results, request, write_requests

TRANSIENT = {"api_error", "overloaded_error"}


async def run_job(settings, out, inputs):
    return await Engine(settings, str(out), [str(p) for p in inputs], quiet=True).run()


def assert_exactly_once(out, expected_ids):
    results = read_results(str(out))
    got = ids_of(results)
    assert len(got) == len(set(got)), "a custom_id was written twice"
    assert sorted(got) == sorted(expected_ids)
    return results


@pytest.mark.parametrize("faults", [False, True], ids=["clean", "all-faults"])
async def test_every_request_is_answered_exactly_once_with_its_own_answer(sim, provider, tmp_path, faults):
    if faults:
        sim.config = SimConfig.all_faults(seed=provider.fault_seed)
    ids = write_requests(tmp_path / "in.jsonl", 2_000)  # Message Batches lines, converted for OpenAI on the way
    settings = provider.settings(sim.url, batch_size=100, max_attempts=6)
    result = await run_job(settings, tmp_path / "out", [tmp_path / "in.jsonl"])
    assert result.exit_code == ExitCode.OK, result.message
    results = assert_exactly_once(tmp_path / "out", ids)
    for r in results:
        assert provider.answer(r) == "answer:" + r["custom_id"], r
    summary = orjson.loads((tmp_path / "out" / "summary.json").read_bytes())
    assert summary["results"]["succeeded"] == 2_000
    assert summary["requests"]["accepted"] == 2_000
    assert summary["tokens"]["output"] == sum(provider.output_tokens(r) for r in results)
    assert summary["cost_usd"] > 0
    if faults:
        assert summary["attempts"]["requests_retried"] > 0
        assert summary["http"]["retries"] + summary["http"]["results_downloads_restarted"] > 0
        paid = sim.stats["requests_created"]
        unadopted = sim.stats["lost_creates"] - summary["batches"]["adopted"]
        if provider.lost_creates == "settled":  # nothing to adopt: a lost add is read back, never paid again
            unadopted = 0
        elif provider.name != "inline":  # inline batches carry nothing a lost create could be recognised by
            assert unadopted == 0, (sim.stats["lost_creates"], summary["batches"])
        # a lost create the client could not adopt is paid again, one batch of 100 each
        assert paid <= 1.05 * 2_000 + summary["attempts"]["requests_retried"] + 100 * unadopted, (
            paid, summary["attempts"], unadopted)
    else:
        assert summary["batches"]["created"] == 20
    provider.batches_check(sim)


async def test_retries_stop_at_max_attempts_and_the_last_errored_line_is_final(sim, tmp_path):
    sim.config.errored_rate = 1.0
    ids = write_requests(tmp_path / "in.jsonl", 50)
    settings = fast_settings(sim.url, max_attempts=1, max_unbilled_attempts=2)  # errored answers are not billed
    result = await run_job(settings, tmp_path / "out", [tmp_path / "in.jsonl"])
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
    assert result.exit_code == ExitCode.AUTH and result.http_status == 401
    assert result.message == ("the API refused the key (HTTP 401): check ANTHROPIC_API_KEY (or CLAUDE_API_KEY) and "
                              "run the same command again; every batch in flight is kept in the ledger and will be "
                              "picked up")
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
    bad = request("hot-1")  # a role no version accepts: not checked here, refused by the API at create
    bad["params"]["messages"] = [{"role": "system", "content": "hi"}]
    with open(tmp_path / "in.jsonl", "ab") as f:
        f.write(orjson.dumps(bad) + b"\n")
    result = await run_job(fast_settings(sim.url), tmp_path / "out", [tmp_path / "in.jsonl"])
    assert result.exit_code == ExitCode.OK, result.message
    assert_exactly_once(tmp_path / "out", ids)
    rejected = [orjson.loads(x) for x in (tmp_path / "out" / "rejected.jsonl").read_bytes().splitlines()]
    assert len(rejected) == 1 and rejected[0]["custom_id"] == "hot-1"
    assert "refused by the API" in rejected[0]["error"] and "messages.0.role" in rejected[0]["error"]
    summary = orjson.loads((tmp_path / "out" / "summary.json").read_bytes())
    assert summary["requests"]["refused_by_api"] == 1
    # a second run reports the refusal again and sends nothing
    creates = sim.stats["creates"]
    assert (await run_job(fast_settings(sim.url), tmp_path / "out", [tmp_path / "in.jsonl"])).exit_code == 0
    assert sim.stats["creates"] == creates
    assert len((tmp_path / "out" / "rejected.jsonl").read_bytes().splitlines()) == 1


async def test_a_job_cancelled_under_an_earlier_version_resumes_with_retry_cancelled(sim, tmp_path):
    import asyncio
    import sqlite3

    from batch_scheduler.job.cancel import cancel_batches
    from batch_scheduler.job.view.status import job_status
    sim.config.processing_s = 30
    ids = write_requests(tmp_path / "in.jsonl", 300)
    out = tmp_path / "out"
    settings = fast_settings(sim.url, concurrency=2)
    task = asyncio.create_task(run_job(settings, out, [tmp_path / "in.jsonl"]))
    def submitted() -> int:  # batches the ledger holds as sent (the simulator counts a create before that)
        if not (out / "ledger.db").exists():
            return 0
        db = sqlite3.connect(out / "ledger.db", timeout=5)
        try:
            return db.execute("SELECT count(*) FROM chunks WHERE state='submitted'").fetchone()[0]
        except sqlite3.OperationalError:  # the tables are being made
            return 0
        finally:
            db.close()
    while submitted() < 2:
        await asyncio.sleep(0.005)
    cancelled = await cancel_batches(str(out), settings)
    assert len(cancelled.requested) == 2 and cancelled.problems == [] and cancelled.refused is None
    result = await task
    assert result.exit_code == ExitCode.FAILED
    assert result.message == ("the job was cancelled; 100 request(s) were not sent. Run again with "
                              "--retry-cancelled to carry on")
    assert result.summary["state"] == "cancelled" and result.summary["requests"]["canceled_parked"] == 200
    db = sqlite3.connect(out / "ledger.db")  # the spelling an earlier version stored
    with db:
        db.execute("UPDATE retries SET state='canceled' WHERE state='cancelled'")
    db.close()
    assert job_status(str(out))["requests"]["canceled_parked"] == 200
    sim.config.processing_s = 0
    result = await run_job(fast_settings(sim.url, concurrency=2, retry_cancelled=True), out, [tmp_path / "in.jsonl"])
    assert result.exit_code == ExitCode.OK, result.message
    assert_exactly_once(out, ids)


async def test_the_next_batch_goes_while_the_last_ones_results_are_being_made_durable(sim, tmp_path, monkeypatch):
    """A batch whose every result line is in gives its slot back as its commit (fsync, ledger) begins: with one
    slot, the next batch is created while the shards of the one before are still being fsync'd."""
    from batch_scheduler.state.shards import ShardSet

    durable = ShardSet.durable
    created_during_commit = []

    async def slow_durable(self):
        before = len(sim.store.batches)
        await asyncio.sleep(0.2)
        created_during_commit.append(len(sim.store.batches) - before)
        return await durable(self)

    monkeypatch.setattr(ShardSet, "durable", slow_durable)
    ids = write_requests(tmp_path / "in.jsonl", 300)
    result = await run_job(fast_settings(sim.url, concurrency=1), tmp_path / "out", [tmp_path / "in.jsonl"])
    assert result.exit_code == ExitCode.OK, result.message
    assert_exactly_once(tmp_path / "out", ids)
    assert created_during_commit[:2] == [1, 1], created_during_commit  # three batches: the 2nd and 3rd went early


async def test_requests_parked_by_a_batch_still_committing_when_nothing_else_is_out_go_again_in_this_run(
        sim, tmp_path, monkeypatch):
    """The slot comes back before the commit, but the run does not end while a batch is being collected: the
    requests its results park for another attempt are sent again in the same run."""
    from batch_scheduler.state.shards import ShardSet

    durable = ShardSet.durable

    async def slow_durable(self):
        await asyncio.sleep(0.2)
        return await durable(self)

    monkeypatch.setattr(ShardSet, "durable", slow_durable)
    sim.config.errored_rate = 1.0
    ids = write_requests(tmp_path / "in.jsonl", 50)
    settings = fast_settings(sim.url, concurrency=1, max_attempts=1, max_unbilled_attempts=2)
    result = await run_job(settings, tmp_path / "out", [tmp_path / "in.jsonl"])
    assert result.exit_code == ExitCode.OK, result.message
    assert_exactly_once(tmp_path / "out", ids)
    summary = orjson.loads((tmp_path / "out" / "summary.json").read_bytes())
    assert summary["attempts"]["requests_sent"] == 100


async def test_the_next_batchs_results_are_asked_for_while_the_one_before_commits(sim, tmp_path, monkeypatch):
    """Batches that ended together are collected one at a time; the next one's download is opened as the one
    before begins its commit (fsync, ledger), not after it, and every answer is still written exactly once."""
    from batch_scheduler.providers.anthropic.provider import AnthropicProvider
    from batch_scheduler.state.shards import ShardSet

    durable, result_blocks = ShardSet.durable, AnthropicProvider.result_blocks
    commits: list[tuple[float, float]] = []
    opened: list[float] = []

    async def slow_durable(self):
        start = asyncio.get_running_loop().time()
        await asyncio.sleep(0.2)
        offsets = await durable(self)
        commits.append((start, asyncio.get_running_loop().time()))
        return offsets

    async def noted_blocks(self, info):
        opened.append(asyncio.get_running_loop().time())
        async for block in result_blocks(self, info):
            yield block

    monkeypatch.setattr(ShardSet, "durable", slow_durable)
    monkeypatch.setattr(AnthropicProvider, "result_blocks", noted_blocks)
    ids = write_requests(tmp_path / "in.jsonl", 400)
    result = await run_job(fast_settings(sim.url, concurrency=4), tmp_path / "out", [tmp_path / "in.jsonl"])
    assert result.exit_code == ExitCode.OK, result.message
    assert_exactly_once(tmp_path / "out", ids)
    during = [t for t in opened if any(a < t < b for a, b in commits)]
    assert len(commits) == 4 and len(during) >= 2, (commits, opened)
