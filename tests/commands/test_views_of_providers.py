"""`status` and `export` on a finished job of each newer provider: the job is done, every row has its own
answer, its status, its model and its tokens, read from the provider's own result lines."""

from __future__ import annotations

import csv
import json

import pytest

from batch_scheduler.commands.main import main
from batch_scheduler.job.engine import Engine, ExitCode
from batch_scheduler.job.view.answer import answer_json, answer_text, error_text, stop_reason
from batch_scheduler.providers import build_settings

from ..conftest import KEY
from ..helpers import write_requests
from ..setups import NEW_PROVIDERS, set_up, use_process_env

FAST = {"poll_min": 0.01, "poll_max": 0.05, "shards": 2, "retry_wait": 0.0}
ANSWER = {"bedrock": "answer to {}"}  # the simulator's Bedrock answers its own way


@pytest.fixture(scope="module")
def moto():
    from ..cluster.servers import MotoServer
    with MotoServer() as server:
        yield server


@pytest.mark.parametrize("name", NEW_PROVIDERS)
async def test_status_and_export_read_a_finished_job_of_each_provider(sim, tmp_path, monkeypatch, capsys, request,
                                                                      name):
    setup = set_up(name, sim, tmp_path, KEY, request.getfixturevalue("moto") if name == "bedrock" else None)
    use_process_env(setup, monkeypatch)
    ids = write_requests(str(tmp_path / "in.jsonl"), 2 * setup.batch_size, model=setup.line_model)
    settings = build_settings({**setup.flags, **FAST, "batch_size": setup.batch_size}, setup.env)
    out = tmp_path / "out"
    result = await Engine(settings, str(out), [str(tmp_path / "in.jsonl")], quiet=True).run()
    assert result.exit_code == ExitCode.OK, result.message
    capsys.readouterr()

    assert main(["status", str(out), "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert (status["state"], status["requests"]["finished"]) == ("done", len(ids))
    assert main(["status", str(out)]) == 0
    assert "done" in capsys.readouterr().out

    assert main(["export", str(out), "-o", str(tmp_path / "t.csv")]) == 0
    with open(tmp_path / "t.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["custom_id"] for r in rows] == ids
    said = ANSWER.get(name, "answer:{}")
    assert [(r["status"], r["text"]) for r in rows] == [("succeeded", said.format(cid)) for cid in ids]
    assert all(r["model"] and int(r["output_tokens"]) > 0 and float(r["cost_usd"]) > 0 for r in rows), rows[:2]


def test_vertex_and_gemini_lines_give_their_text_stop_reason_tool_input_and_error():
    message = {"type": "message", "role": "assistant", "stop_reason": "tool_use", "content": [
        {"type": "text", "text": "Hel"}, {"type": "text", "text": "lo"}, {"type": "tool_use", "input": {"a": 1}}]}
    claude_ok = {"custom_id": "v", "request": {}, "response": message, "status": ""}
    gemini_ok = {"custom_id": "g", "request": {}, "status": "", "response": {"candidates": [
        {"content": {"parts": [{"text": "Hi", "thought": False}]}, "finishReason": "MAX_TOKENS"}]}}
    failed = {"custom_id": "v", "request": {}, "status": "400 INVALID_ARGUMENT: max_tokens: Field required"}
    rpc_failed = {"custom_id": "v", "request": {}, "status": {"code": 13, "message": "Internal error encountered."}}
    gemini_failed = {"key": "g", "error": {"code": 503, "message": "The model is overloaded.", "status": "UNAVAILABLE"}}
    lines = (claude_ok, gemini_ok, failed, rpc_failed, gemini_failed)
    assert [answer_text(d) for d in lines] == ["Hello", "Hi", None, None, None]
    assert [stop_reason(d) for d in lines] == ["tool_use", "MAX_TOKENS", None, None, None]
    assert [answer_json(d) for d in lines] == [{"a": 1}, None, None, None, None]
    assert [error_text(d) for d in lines] == [None, None, "400 INVALID_ARGUMENT: max_tokens: Field required",
                                              "13: Internal error encountered.", "503: The model is overloaded."]
