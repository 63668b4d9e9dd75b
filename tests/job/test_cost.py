"""Cost that fails closed: prices per token kind (1-hour cache writes, long context, batch overrides),
a --max-cost job with an unpriced model refused before anything is sent, and the measured token
ratio kept in the ledger and used by the cap."""

from __future__ import annotations

import json
import pathlib

import aiohttp
import orjson
import pytest
from aiohttp import web

import batch_scheduler
from batch_scheduler.commands.main import main
from batch_scheduler.core.errors import UsageError
from batch_scheduler.job.dryrun import estimate
from batch_scheduler.job.engine import Engine, ExitCode
from batch_scheduler.job.input.validate import Rejects
from batch_scheduler.job.money.pricing import PriceTable, cost_range
from batch_scheduler.providers.base import Usage
from batch_scheduler.providers.common import classify_result
from batch_scheduler.state.ledger.sqlite import Ledger

from ..conftest import KEY, fast_settings
from ..helpers import request

PRICES = PriceTable.load()


# -- the table ---------------------------------------------------------------------------------------


def test_the_shipped_table_says_when_it_was_taken_and_knows_current_models():
    doc = json.loads(PRICES_PATH.read_text(encoding="utf-8"))
    assert doc["taken"] == "2026-12-01" and PRICES.taken == "2026-12-01"
    for model in ("claude-opus-4-8", "claude-sonnet-4-6", "claude-haiku-4-5", "claude-sonnet-5-5", "claude-opus-5",
                  "claude-haiku-5-5", "claude-fable-5-2", "gpt-5.5", "gpt-6-sol", "gpt-4.1-mini", "gpt-4o-mini"):
        assert PRICES.price(model) is not None, model
    sonnet = PRICES.price("claude-sonnet-4-5")
    assert (sonnet.input, sonnet.cache_write, sonnet.cache_write_1h, sonnet.cache_read) == (3.0, 3.75, 6.0, 0.3)


PRICES_PATH = pathlib.Path(batch_scheduler.__file__).parent / "data" / "prices.json"


@pytest.mark.parametrize("model, key", [
    ("claude-sonnet-4-5-20250929", "claude-sonnet-4-5"),
    ("claude-sonnet-4-20250514", "claude-sonnet-4"),
    ("claude-3-5-haiku-latest", "claude-3-5-haiku"),
    ("gpt-4o-2024-08-06", "gpt-4o"),
    ("gpt-4o-2024-05-13", "gpt-4o-2024-05-13"),  # a snapshot with its own price wins over the family's
])
def test_a_model_id_matches_its_key_or_the_key_plus_a_snapshot_date(model, key):
    assert PRICES.price(model) == PRICES.models[key]


@pytest.mark.parametrize("model", ["claude-opus-4-9", "claude-sonnet-4-5-thinking", "gpt-5.5-mega", "gpt-4o-audio"])
def test_a_model_that_only_begins_like_a_known_one_has_no_price(model):
    assert PRICES.price(model) is None  # never the price of claude-opus-4 or gpt-5.5, guessed by prefix


def test_one_hour_cache_writes_cost_twice_input_and_five_minute_ones_1_25x_at_batch_prices():
    # claude-sonnet-4-6: input $3, 5-minute write $3.75, 1-hour write $6, read $0.30; batch: half of each
    usage = Usage(input_tokens=1_000_000, output_tokens=0, cache_write_tokens=3_000_000, cache_read_tokens=1_000_000,
                  cache_write_1h_tokens=1_000_000)
    assert PRICES.cost("claude-sonnet-4-6", usage) == pytest.approx((3.0 + 2 * 3.75 + 6.0 + 0.3) * 0.5)


def test_a_results_line_gives_the_one_hour_part_of_its_cache_writes():
    line = orjson.dumps({"custom_id": "a", "result": {"type": "succeeded", "message": {
        "model": "claude-sonnet-4-5", "usage": {
            "input_tokens": 10, "output_tokens": 5, "cache_creation_input_tokens": 300, "cache_read_input_tokens": 7,
            "cache_creation": {"ephemeral_5m_input_tokens": 100, "ephemeral_1h_input_tokens": 200}}}}})
    assert classify_result(line)[2] == (10, 5, 300, 7, 200)


def test_every_token_of_a_request_past_the_long_context_threshold_costs_the_higher_price():
    # claude-haiku-5-5: $0.10 input / $0.50 output; a prompt above 100,000 tokens: $0.50 / $2.50
    short, long = (90_000, 1_000, 5_000, 4_000, 0), (99_000, 1_000, 1_000, 1_000, 0)  # prompts 99k and 101k
    cost = PRICES.cost("claude-haiku-5-5", [short, long])
    expected = ((90_000 * 0.10 + 1_000 * 0.50 + 5_000 * 0.125 + 4_000 * 0.01)
                + (99_000 * 0.50 + 1_000 * 2.50 + 1_000 * 0.625 + 1_000 * 0.05)) * 0.5 / 1e6
    assert cost == pytest.approx(expected)


def test_a_batch_price_the_table_names_beats_the_discount():
    # gpt-4.1 in a batch bills cached input at the batch input price ($1.00), not half the cache price
    assert PRICES.cost("gpt-4.1", Usage(cache_read_tokens=1_000_000)) == pytest.approx(1.0)


def test_a_user_price_file_adds_a_model_with_the_old_shape(tmp_path):
    (tmp_path / "p.json").write_text('{"models": {"my-local-model": {"input": 1, "output": 2, "cache_write": 1.25, '
                                     '"cache_read": 0.1}}}')
    prices = PriceTable.load(str(tmp_path / "p.json"))
    assert prices.cost("my-local-model", Usage(cache_write_tokens=2_000_000, cache_write_1h_tokens=1_000_000)) == \
        pytest.approx((1.25 + 2.0) * 0.5)  # an unnamed 1-hour price is 2x input


@pytest.mark.parametrize("entry, field", [
    ({"input": -1, "output": 2, "cache_write": 1.25, "cache_read": 0.1}, "input is -1.0"),
    ({"input": 1, "output": 2, "cache_write": 1.25, "cache_read": 0.1, "batch": {"output": -0.5}}, "batch.output is -0.5"),
    ({"input": 1, "output": 2, "cache_write": 1.25, "cache_read": 0.1, "cache_write_1h": float("nan")},
     "cache_write_1h is nan"),
    ({"input": 1, "output": 2, "cache_write": 1.25, "cache_read": 0.1,
      "long_context": {"above_input_tokens": 200000, "input": 2, "output": -4}}, "long_context.output is -4"),
    ({"input": 1, "output": 2, "cache_write": 1.25, "cache_read": 0.1,
      "long_context": {"above_input_tokens": 200000, "input": 2, "output": "4"}}, "long_context.output is '4'"),
])
def test_a_negative_or_non_finite_price_is_refused_at_load_naming_the_model_and_field(tmp_path, entry, field):
    """Row 12: a negative price would make every answer earn money and slip past --max-cost."""
    (tmp_path / "p.json").write_text(json.dumps({"models": {"my-model": entry}}))
    with pytest.raises(UsageError) as info:
        PriceTable.load(str(tmp_path / "p.json"))
    assert str(info.value) == (f"--prices {tmp_path / 'p.json'}: my-model: {field}: a price is a number >= 0 "
                               f"(USD per million tokens)")


def test_a_negative_batch_discount_is_refused(tmp_path):
    (tmp_path / "p.json").write_text('{"models": {}, "batch_discount": -0.5}')
    with pytest.raises(UsageError) as info:
        PriceTable.load(str(tmp_path / "p.json"))
    assert str(info.value) == f"--prices {tmp_path / 'p.json'}: batch_discount is -0.5: expected a number >= 0"


# -- --max-cost fails closed -----------------------------------------------------------------------------


def write(path, objs) -> str:
    path.write_bytes(b"".join(orjson.dumps(o) + b"\n" for o in objs))
    return str(path)


UNPRICED = ("--max-cost cannot hold this job: the price table has no price for my-local-model. Give the price(s) "
            "with --prices FILE (the shape of batch_scheduler/data/prices.json), or run without --max-cost. "
            "Nothing was submitted")


def nothing_sent(sim) -> bool:
    return sim.stats["creates"] == 0 and sim.stats["uploads"] == 0 and not sim.stats["calls"]


async def test_an_unpriced_model_anywhere_in_the_input_refuses_the_job_before_any_call(sim, tmp_path):
    lines = [request(f"r{i}") for i in range(499)] + [request("last", model="my-local-model")]
    path = write(tmp_path / "in.jsonl", lines)
    settings = fast_settings(sim.url, batch_size=50, max_cost_usd=100.0)
    result = await Engine(settings, str(tmp_path / "out"), [path], quiet=True).run()
    assert (result.exit_code, result.message) == (ExitCode.USAGE, UNPRICED)
    assert nothing_sent(sim)


async def test_pricing_it_with_a_file_lets_the_same_job_run_without_reading_the_input_again(sim, tmp_path):
    path = write(tmp_path / "in.jsonl", [request("a"), request("b", model="my-local-model")])
    out = str(tmp_path / "out")
    result = await Engine(fast_settings(sim.url, max_cost_usd=1.0), out, [path], quiet=True).run()
    assert result.exit_code == ExitCode.USAGE and nothing_sent(sim)
    (tmp_path / "p.json").write_text('{"models": {"my-local-model": {"input": 1, "output": 1, "cache_write": 1, '
                                     '"cache_read": 1}}}')
    priced = fast_settings(sim.url, max_cost_usd=1.0, prices_file=str(tmp_path / "p.json"))
    result = await Engine(priced, out, [path], quiet=True).run()
    assert result.exit_code == ExitCode.OK, result.message
    assert result.summary["estimate"]["requests"] == 2


def test_the_command_line_exits_2_naming_the_model_and_sends_nothing(sim_process, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    path = write(tmp_path / "in.jsonl", [request("a", model="my-local-model")])
    code = main(["run", path, "--out", str(tmp_path / "out"), "--base-url", sim_process.url, "--max-cost", "5"])
    assert code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == f"batch-scheduler: {UNPRICED}"
    assert sim_process.stats()["creates"] == 0


@pytest.fixture
def sim_process():
    from batch_scheduler.simulator.process import SimulatorProcess
    with SimulatorProcess([]) as s:
        yield s


async def test_without_a_cap_an_unpriced_model_runs_as_before(sim, tmp_path):
    path = write(tmp_path / "in.jsonl", [request("a", model="my-local-model")])
    result = await Engine(fast_settings(sim.url), str(tmp_path / "out"), [path], quiet=True).run()
    assert result.exit_code == ExitCode.OK
    assert result.summary["unknown_price_models"] == ["my-local-model"]
    assert result.summary["estimate"] is None  # no estimate made: the job has no cap


# -- the measured ratio, in the ledger and in the cap -------------------------------------------------------


@pytest.fixture
async def counting_sim(sim):
    """The simulator behind a front that answers count_tokens itself: 3x the heuristic's 10 tokens."""
    seen: list[dict] = []

    async def count(request: web.Request) -> web.Response:
        seen.append(await request.json())
        return web.json_response({"input_tokens": 30})

    async def forward(request: web.Request) -> web.Response:
        async with aiohttp.ClientSession() as client, client.request(
                request.method, sim.url + request.path_qs, headers=request.headers, data=await request.read()) as r:
            return web.Response(status=r.status, body=await r.read(), content_type=r.content_type)

    app = web.Application(client_max_size=1 << 30)
    app.router.add_post("/v1/messages/count_tokens", count)
    app.router.add_route("*", "/{tail:.*}", forward)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    front = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]
    try:
        yield front, seen
    finally:
        await runner.cleanup()


async def test_the_ratio_a_run_measures_is_kept_in_the_ledger_and_scales_the_cap(sim, counting_sim, tmp_path):
    front, seen = counting_sim
    sim.config.processing_s = 1.0  # every batch is admitted before one ends: only the estimates decide
    path = write(tmp_path / "in.jsonl", [request(f"r{i:03d}", "x" * 35, max_tokens=10) for i in range(200)])
    settings = fast_settings(front, batch_size=50, concurrency=8, count_sample=5)
    est = await estimate(settings, [path], Rejects(None, [path]))
    at_ratio_1 = sum(cost_range(PRICES, m, t)[1] for m, t in est.by_model.items())
    result = await Engine(settings.replace(max_cost_usd=at_ratio_1 * 1.001), str(tmp_path / "out"), [path],
                          quiet=True).run()
    assert len(seen) == 5 and all(set(body) == {"model", "messages"} for body in seen)
    ledger = Ledger(str(tmp_path / "out" / "ledger.db"))
    kept = ledger.read_meta()["estimate"]
    ledger.close()
    assert (kept["method"], kept["heuristic_input_tokens"], kept["input_tokens"]) == ("count_tokens", 2_000, 6_000)
    assert kept["measured"]["ratio"] == 3.0 and kept["measured"]["sample"] == 5
    # at 3x the input estimate the same cap holds fewer batches: the ratio is what the cap used
    assert result.exit_code == ExitCode.FAILED and "stopped at --max-cost" in result.message
    assert 0 < sim.stats["requests_created"] < 200
    summary = result.summary["estimate"]
    assert summary["input_tokens"] == 6_000 and summary["ratio"] == 3.0
    assert summary["actual_input_tokens"] > 0 and summary["actual_over_estimate"] is not None
