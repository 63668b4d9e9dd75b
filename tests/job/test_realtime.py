"""The realtime lane end to end against the simulator: --mode realtime, rate limits, lost answers, pricing."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import orjson
import pytest

from batch_scheduler.job.engine import Engine, ExitCode
from batch_scheduler.simulator import SimConfig

from ..conftest import fast_settings
from ..helpers import ids_of, read_results, write_requests


async def run_job(settings, out, inputs):
    return await Engine(settings, str(out), [str(p) for p in inputs], quiet=True).run()


def summary_of(out) -> dict:
    return orjson.loads((out / "summary.json").read_bytes())


def assert_exactly_once(out, expected_ids) -> list[dict]:
    results = read_results(str(out))
    got = ids_of(results)
    assert len(got) == len(set(got)), "a custom_id was written twice"
    assert sorted(got) == sorted(expected_ids)
    return results


@pytest.mark.parametrize("provider", ["anthropic", "openai"])
async def test_mode_realtime_answers_every_request_once_without_a_batch(sim, tmp_path, provider):
    ids = write_requests(tmp_path / "in.jsonl", 60)
    settings = fast_settings(sim.url, provider=provider, mode="realtime", batch_size=25, realtime_concurrency=4)
    result = await run_job(settings, tmp_path / "out", [tmp_path / "in.jsonl"])
    assert result.exit_code == ExitCode.OK, result.message
    results = assert_exactly_once(tmp_path / "out", ids)
    assert sim.stats["creates"] == 0 and sim.stats["realtime_calls"] == 60
    succeeded = [r for r in results if (r.get("result") or {}).get("type") == "succeeded"
                 or (r.get("response") or {}).get("status_code") == 200]
    assert len(succeeded) == 60
    realtime = summary_of(tmp_path / "out")["realtime"]
    assert realtime["requests"] == 60 and realtime["possibly_paid"] == 0
    assert realtime["extra_usd"] > 0  # realtime prices: twice the batch price of the same tokens


async def test_realtime_429s_slow_the_lane_and_fail_no_request(sim, tmp_path):
    sim.config = SimConfig(seed=5, realtime_rpm=10, realtime_window_s=0.5)
    ids = write_requests(tmp_path / "in.jsonl", 40)
    settings = fast_settings(sim.url, mode="realtime", batch_size=40, realtime_concurrency=8)
    result = await run_job(settings, tmp_path / "out", [tmp_path / "in.jsonl"])
    assert result.exit_code == ExitCode.OK, result.message
    assert_exactly_once(tmp_path / "out", ids)
    assert sim.stats["realtime_rate_limited"] > 0
    assert sim.stats["realtime_calls"] == 40  # a 429 is not an answer: each request was answered once


async def test_a_lost_realtime_answer_counts_as_possibly_paid_and_goes_again(sim, tmp_path):
    sim.config = SimConfig(seed=7, fail_rate=0.2, fail_kinds=["dropped"])
    ids = write_requests(tmp_path / "in.jsonl", 50)
    settings = fast_settings(sim.url, mode="realtime", batch_size=25, max_unbilled_attempts=20)
    result = await run_job(settings, tmp_path / "out", [tmp_path / "in.jsonl"])
    assert result.exit_code == ExitCode.OK, result.message
    results = assert_exactly_once(tmp_path / "out", ids)
    assert all(r["result"]["type"] == "succeeded" for r in results)
    summary = summary_of(tmp_path / "out")
    assert summary["realtime"]["possibly_paid"] == sim.stats["faults"]["dropped"] > 0


async def test_finish_by_sends_realtime_what_another_batch_round_trip_would_bring_back_too_late(sim, tmp_path):
    sim.config = SimConfig(seed=11, processing_s=2.0, errored_rate=0.2)
    ids = write_requests(tmp_path / "in.jsonl", 200)
    settings = fast_settings(sim.url, batch_size=50, finish_by="3s", max_attempts=3)
    result = await run_job(settings, tmp_path / "out", [tmp_path / "in.jsonl"])
    assert result.exit_code == ExitCode.OK, result.message
    results = assert_exactly_once(tmp_path / "out", ids)
    assert all(r["result"]["type"] == "succeeded" for r in results)
    summary = summary_of(tmp_path / "out")
    assert sim.stats["creates"] == 4  # the first wave only: its retries would have come back after 3 s
    retried = summary["attempts"]["requests_retried"]
    assert retried > 0 and summary["realtime"]["requests"] == retried == sim.stats["realtime_calls"]
    assert 0 < summary["realtime"]["extra_usd"] < summary["cost_usd"]


async def test_at_deadline_realtime_cancels_the_batches_out_and_sends_their_unanswered_requests_realtime(
        sim, tmp_path):
    sim.config = SimConfig(seed=13, processing_s=30.0)
    ids = write_requests(tmp_path / "in.jsonl", 100)
    settings = fast_settings(sim.url, batch_size=50, finish_by="1s", at_deadline="realtime")
    result = await run_job(settings, tmp_path / "out", [tmp_path / "in.jsonl"])
    assert result.exit_code == ExitCode.OK, result.message
    results = assert_exactly_once(tmp_path / "out", ids)
    assert all(r["result"]["type"] == "succeeded" for r in results)
    assert sim.stats["cancels"] == 2
    realtime = summary_of(tmp_path / "out")["realtime"]["requests"]
    assert realtime == sim.stats["realtime_calls"] > 0


async def test_mode_realtime_inside_an_open_window_drives_a_chat_endpoint(sim, tmp_path):
    now = datetime.now(UTC)
    window = f"{(now - timedelta(hours=1)):%H:%M}-{(now + timedelta(hours=1)):%H:%M}"
    ids = write_requests(tmp_path / "in.jsonl", 30)
    settings = fast_settings(sim.url + "/v1", provider="openai", mode="realtime", window=(window,))
    result = await run_job(settings, tmp_path / "out", [tmp_path / "in.jsonl"])
    assert result.exit_code == ExitCode.OK, result.message
    results = assert_exactly_once(tmp_path / "out", ids)
    assert all(r["response"]["status_code"] == 200 for r in results) and sim.stats["creates"] == 0


class ScriptedClock:
    """The wall clock --window is read on: it moves only when the lane waits for a window (or `jump`)."""

    def __init__(self, start: float, sim):
        self.now, self.sim = start, sim
        self.pauses: list[tuple[float, float, int]] = []  # (when, how long, realtime calls made by then)

    def __call__(self) -> float:
        return self.now

    async def pause(self, seconds: float) -> None:
        self.pauses.append((self.now, seconds, self.sim.stats.get("realtime_calls", 0)))
        self.now += seconds
        await asyncio.sleep(0)


@pytest.fixture
def clock(sim, monkeypatch) -> ScriptedClock:
    from batch_scheduler.job.send import realtime
    scripted = ScriptedClock(datetime(2025, 7, 1, 15, 50, tzinfo=UTC).timestamp(), sim)
    monkeypatch.setattr(realtime, "wall_clock", scripted)
    monkeypatch.setattr(realtime, "window_pause", scripted.pause)
    return scripted


async def test_mode_realtime_waits_for_its_window_to_open_and_calls_nothing_before(sim, tmp_path, clock):
    ids = write_requests(tmp_path / "in.jsonl", 40)
    settings = fast_settings(sim.url + "/v1", provider="openai", mode="realtime", window=("16:00-17:00",),
                             realtime_concurrency=4)
    result = await run_job(settings, tmp_path / "out", [tmp_path / "in.jsonl"])
    assert result.exit_code == ExitCode.OK, result.message
    assert_exactly_once(tmp_path / "out", ids)
    opens = datetime(2025, 7, 1, 16, 0, tzinfo=UTC).timestamp()
    assert clock.pauses and all(when < opens and calls == 0 for when, _, calls in clock.pauses)
    assert all(seconds <= 60 for _, seconds, _ in clock.pauses)  # it looks again at least each minute
    assert clock.now == opens and sim.stats["realtime_calls"] == 40  # every call made once it opened


async def test_a_window_that_closes_mid_job_pauses_the_calls_until_it_opens_the_next_day(sim, tmp_path, clock):
    clock.now = datetime(2025, 7, 1, 16, 59, 59, tzinfo=UTC).timestamp()  # open, for one more second
    sim.config = SimConfig(realtime_latency_s=0.002)
    ids = write_requests(tmp_path / "in.jsonl", 60)
    settings = fast_settings(sim.url + "/v1", provider="openai", mode="realtime", window=("16:00-17:00",),
                             realtime_concurrency=1, batch_size=20)
    job = asyncio.create_task(run_job(settings, tmp_path / "out", [tmp_path / "in.jsonl"]))
    while sim.stats.get("realtime_calls", 0) < 10:
        await asyncio.sleep(0.001)
    clock.now += 1  # 17:00: the window closes with calls still to make
    result = await job
    assert result.exit_code == ExitCode.OK, result.message
    assert_exactly_once(tmp_path / "out", ids)
    closed_at = datetime(2025, 7, 1, 17, 0, tzinfo=UTC).timestamp()
    reopens = closed_at + 23 * 3600
    assert clock.pauses[0][0] == closed_at and 10 <= clock.pauses[0][2] < 60  # paused part-way through
    assert {calls for _, _, calls in clock.pauses} == {clock.pauses[0][2]}  # no call while it was closed
    assert clock.now == reopens and sim.stats["realtime_calls"] == 60
