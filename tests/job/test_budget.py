"""--max-cost holds each batch in flight at the top of the dry run's cost range: the two never disagree."""

from __future__ import annotations

import asyncio
import logging

import orjson
import pytest

from batch_scheduler.job.dryrun import estimate
from batch_scheduler.job.engine import Engine, ExitCode
from batch_scheduler.job.input.validate import Rejects
from batch_scheduler.job.money.budget import Budget
from batch_scheduler.job.money.pricing import PriceTable, cost_range

from ..conftest import fast_settings
from ..helpers import request

TEXT_35 = "x" * 35  # 10 tokens at 3.5 characters a token


def line(obj: dict) -> bytes:
    return orjson.dumps(obj)


def test_a_batch_is_held_at_its_input_estimate_plus_every_max_output_at_each_models_batch_price():
    lines = [
        # Message Batches form: system and text blocks count their text, 30 tokens in, 100 out
        line({"custom_id": "a", "params": {"model": "claude-sonnet-4-5", "max_tokens": 100, "system": TEXT_35,
                                           "messages": [{"role": "user", "content": [
                                               {"type": "text", "text": TEXT_35 * 2}]}]}}),
        # OpenAI chat completions: 10 in, max_completion_tokens 200 out
        line({"custom_id": "b", "method": "POST", "url": "/v1/chat/completions", "body": {
            "model": "gpt-4o-mini", "max_completion_tokens": 200,
            "messages": [{"role": "user", "content": TEXT_35}]}}),
        # OpenAI responses: 200 in, max_output_tokens 500 out
        line({"custom_id": "c", "method": "POST", "url": "/v1/responses", "body": {
            "model": "gpt-4o-mini", "max_output_tokens": 500, "input": TEXT_35 * 20}}),
    ]
    sonnet = (30 * 3.0 + 100 * 15.0) * 0.5 / 1e6
    mini = ((10 + 200) * 0.15 + (200 + 500) * 0.60) * 0.5 / 1e6
    assert Budget(10.0, PriceTable.load()).estimate(lines) == pytest.approx(sonnet + mini, rel=1e-12)


def test_without_a_cap_nothing_is_estimated():
    assert Budget(None, PriceTable.load()).estimate([b"not even json"]) == 0.0


def test_a_model_without_a_price_counts_nothing_against_the_cap_and_is_named_once(caplog):
    budget = Budget(1.0, PriceTable.load())
    priced = line(request("a", TEXT_35, max_tokens=100))
    unpriced = [line(request(f"u{i}", TEXT_35, model="my-local-model")) for i in range(3)]
    with caplog.at_level(logging.WARNING, logger="batch_scheduler.budget"):
        mixed, alone, again = (budget.estimate([priced, *unpriced]), budget.estimate([priced]),
                               budget.estimate(unpriced * 2))
    assert mixed == alone > 0 and again == 0.0
    assert [r.getMessage() for r in caplog.records] == [
        "--max-cost cannot count requests for my-local-model: the price table has no price for it "
        "(give one with --prices FILE)"]


def write_mixed(path, n: int) -> list[str]:
    """Requests of two priced models, with texts and max_tokens of every size."""
    ids = []
    with open(path, "wb") as f:
        for i in range(n):
            model = "claude-sonnet-4-5" if i % 3 else "claude-haiku-4-5"
            ids.append(f"m-{i:05d}")
            text = "word " * (i % 40 + 1)
            f.write(line(request(ids[-1], text, model=model, max_tokens=16 + i % 200)) + b"\n")
    return ids


@pytest.mark.parametrize("cap_vs_dry_run, created", [(1 + 1e-9, 250), (1 - 1e-9, 200)],
                         ids=["at-the-upper-figure", "just-under"])
async def test_the_dry_runs_upper_figure_is_the_cap_that_lets_the_whole_job_through(
        sim, tmp_path, cap_vs_dry_run, created):
    sim.config.processing_s = 1.0  # every batch is admitted before one ends: only the estimates decide
    write_mixed(tmp_path / "in.jsonl", 250)
    settings = fast_settings(sim.url, batch_size=50, concurrency=8)
    prices = PriceTable.load()
    est = await estimate(settings, [str(tmp_path / "in.jsonl")], Rejects(None, [str(tmp_path / "in.jsonl")]))
    upper = sum(cost_range(prices, model, totals)[1] for model, totals in est.by_model.items())
    # count_sample=0: the run scales by no measured ratio, as this dry run does not (see test_cost for one that does)
    capped = fast_settings(sim.url, batch_size=50, concurrency=8, max_cost_usd=upper * cap_vs_dry_run, count_sample=0)
    result = await Engine(capped, str(tmp_path / "out"), [str(tmp_path / "in.jsonl")], quiet=True).run()
    assert sim.stats["requests_created"] == created
    if created == 250:
        assert result.exit_code == ExitCode.OK, result.message
    else:
        assert result.exit_code == ExitCode.FAILED
        cap = upper * cap_vs_dry_run
        assert result.message.startswith(f"stopped at --max-cost ${cap:,.2f}: "), result.message


async def test_a_resumed_run_counts_the_batches_a_previous_run_left_in_flight(sim, tmp_path):
    sim.config.processing_s = 1.5
    inp, out = tmp_path / "in.jsonl", str(tmp_path / "out")
    with open(inp, "wb") as f:
        for i in range(200):
            f.write(line(request(f"r{i}", "hello " * 20, max_tokens=100)) + b"\n")
    one_batch = Budget(1.0, PriceTable.load()).estimate(inp.read_bytes().splitlines()[:50])
    first = asyncio.create_task(Engine(fast_settings(sim.url, batch_size=50, concurrency=2), out, [str(inp)],
                                       quiet=True).run())
    while sim.stats["requests_created"] < 100:  # two batches in flight, then the process stops
        await asyncio.sleep(0.01)
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    # Two batches still in flight count against the cap: a third would pass it, so none is sent.
    capped = fast_settings(sim.url, batch_size=50, concurrency=8, max_cost_usd=one_batch * 2.5)
    result = await Engine(capped, out, [str(inp)], quiet=True).run()
    assert sim.stats["requests_created"] == 100
    assert result.exit_code == ExitCode.FAILED and "stopped at --max-cost" in result.message
    assert result.summary["requests"]["finished"] == 100
