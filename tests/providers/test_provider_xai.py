"""`--provider xai` as the CLI meets it under the simulator's real faults, lost creates adopted by the batch's name,
a half-filled batch never adopted, and xAI's status-less batch object read from its counts."""

from __future__ import annotations

import logging

import orjson
import pytest

from batch_scheduler.job.engine import Engine, ExitCode
from batch_scheduler.providers.base import BatchState
from batch_scheduler.providers.openai.xai import XaiProvider, batch_tag, result_line
from batch_scheduler.simulator.openai.xai import HOST

from ..conftest import PROVIDERS, fast_settings
from ..helpers import ids_of, read_results, write_requests
from .real_run import run_under_real_faults

MODEL = "grok-4-fast"


@pytest.fixture
def env(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # no stray .env
    for name in ("BATCH_PROVIDER", "XAI_API_KEY", "XAI_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


def xai() -> XaiProvider:
    return XaiProvider(fast_settings("https://x", provider="xai"), None)  # type: ignore[arg-type]  # no call


def test_a_job_finishes_exactly_once_under_real_faults_then_status(env, monkeypatch, capsys):
    stats = run_under_real_faults(env, monkeypatch, capsys, provider="xai", model=MODEL, key_env="XAI_API_KEY",
                                  url_env="XAI_BASE_URL", host=HOST)
    assert stats["calls"]["xai.batches.add_requests"] >= 12


@pytest.mark.parametrize("ghost_404_s", [0.0, 0.3], ids=["readable", "ghost-404s-after-create"])
async def test_lost_add_answers_are_settled_by_the_batch_count_and_no_request_is_paid_twice(sim, tmp_path,
                                                                                          ghost_404_s):
    sim.config.lost_create_rate = 0.4
    sim.config.ghost_404_s = ghost_404_s  # a batch just made answers 404 a while: its count is asked again
    ids = write_requests(tmp_path / "in.jsonl", 1_000)
    result = await Engine(PROVIDERS["xai"].settings(sim.url), str(tmp_path / "out"),
                          [str(tmp_path / "in.jsonl")], quiet=True).run()
    assert result.exit_code == ExitCode.OK, result.message
    assert sorted(ids_of(read_results(str(tmp_path / "out")))) == sorted(ids)
    assert sim.stats["lost_creates"] > 0 and sim.stats["requests_created"] == 1_000
    assert sim.stats["calls"]["xai.batches.retrieve"] >= sim.stats["lost_creates"]  # each settled by a count


def test_a_batch_is_ours_only_when_it_holds_every_request_and_was_not_cancelled():
    def info(name, n, cancel=None):
        return xai()._info({"batch_id": "b1", "name": name, "cancel_time": cancel,
                            "state": {"num_requests": n, "num_pending": n}})
    assert batch_tag(info("job-a-chunk-1:50", 50)) == "job-a-chunk-1"
    assert batch_tag(info("job-a-chunk-1:50", 20)) is None  # half filled
    assert batch_tag(info("job-a-chunk-1:50", 50, "2026-01-01T00:00:00Z")) is None
    assert batch_tag(info("someone else's", 50)) is None


def test_a_batch_has_ended_when_nothing_is_pending_and_every_request_is_counted():
    def state(**n):
        return xai()._info({"batch_id": "b1", "state": n}).state
    assert state(num_requests=3, num_pending=0, num_success=2, num_error=1) is BatchState.ENDED
    assert state(num_requests=3, num_pending=1, num_success=2) is BatchState.IN_PROGRESS
    assert state(num_requests=0, num_pending=0) is BatchState.IN_PROGRESS  # created, nothing added yet


def test_a_state_of_another_shape_is_logged_once_and_read_as_running(caplog):
    with caplog.at_level(logging.WARNING, logger="batch_scheduler.providers"):
        states = [xai()._info({"batch_id": "b7", "state": "DONE"}).state for _ in range(3)]
    assert states == [BatchState.IN_PROGRESS] * 3
    assert [r.getMessage() for r in caplog.records] == [
        "batch b7: list answer: state is 'DONE', not the counts xAI documents; read as still running (said once)"]


def test_results_become_openai_output_lines_with_the_rpc_code_named():
    ok = orjson.loads(result_line({"batch_request_id": "a", "batch_result": {"response": {
        "chat_get_completion": {"choices": []}}}}, "results"))
    assert ok == {"custom_id": "a", "response": {"status_code": 200, "body": {"choices": []}}}
    busy = orjson.loads(result_line({"batch_request_id": "b", "error": {"code": 14, "message": "busy"}}, "results"))
    assert busy["error"] == {"code": "server_error", "message": "busy", "rpc_code": 14}
    with pytest.raises(ValueError, match="expected a result with a batch_request_id"):
        result_line({"response": {}}, "results")


def test_a_line_for_another_endpoint_is_refused_naming_it():
    line = {"custom_id": "a", "method": "POST", "url": "/v1/embeddings", "body": {"model": "m", "input": "x"}}
    assert xai().check_request(line, orjson.dumps(line)) == (
        "url: xAI batches take /v1/chat/completions only, not '/v1/embeddings'", None)
