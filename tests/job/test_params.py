"""Templates that shape any request: --params, --cache-system, --model-field, --params-field, checked locally
and visible in what the API receives."""

from __future__ import annotations

import csv
import json

import orjson
import pytest
from aiohttp import web

import batch_scheduler
from batch_scheduler.core.errors import UsageError
from batch_scheduler.core.settings import Settings
from batch_scheduler.job.input.params import check_params
from batch_scheduler.job.input.sources import make_sources
from batch_scheduler.job.input.template import Renderer
from batch_scheduler.providers import build_settings
from batch_scheduler.providers.anthropic.inline import fold_system
from batch_scheduler.simulator import SimConfig, Simulator

FAST = dict(poll_min=0.01, poll_max=0.05, shards=2, api_key="sk-params-test")
MODEL = "claude-haiku-4-5"


class RecordingSimulator(Simulator):
    """The simulator, keeping every Message Batches request it was sent (the real one keeps no bodies)."""

    def __init__(self, config: SimConfig):
        super().__init__(config)
        self.received: list[dict] = []

    def app(self) -> web.Application:
        app = super().app()

        @web.middleware
        async def record(request: web.Request, handler):
            if request.method == "POST" and request.path in ("/v1/messages/batches", "/v1/batches"):
                doc = orjson.loads(await request.read())  # read once: aiohttp keeps the body for the handler
                self.received += doc.get("requests", []) if isinstance(doc, dict) else []
            return await handler(request)
        app.middlewares.append(record)
        return app


@pytest.fixture
async def recording():
    sim = RecordingSimulator(SimConfig(seed=3))
    await sim.start()
    try:
        yield sim
    finally:
        await sim.stop()


def write_csv(path, header, rows):
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


async def test_params_cache_system_and_the_rows_own_fields_reach_the_api(recording, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    tool = {"name": "record_summary", "description": "keep it", "input_schema": {"type": "object", "properties": {
        "summary": {"type": "string"}}, "required": ["summary"]}}
    (tmp_path / "params.json").write_text(json.dumps({
        "temperature": 0.2, "stop_sequences": ["###"], "tools": [tool],
        "tool_choice": {"type": "tool", "name": "record_summary"}, "metadata": {"user_id": "team-7"}}))
    write_csv(tmp_path / "rows.csv", ["id", "text", "model", "opts"], [
        ["a", "plain row", "", ""],
        ["b", "own model", "claude-sonnet-4-5", ""],
        ["c", "own params", "", '{"temperature": 0.9, "top_k": 5}'],
    ])
    result = await batch_scheduler.arun(
        tmp_path / "rows.csv", tmp_path / "out", base_url=recording.url, template="Summarise: {text}",
        system="You are terse.", cache_system=True, params=str(tmp_path / "params.json"), model=MODEL,
        max_tokens=100, id_field="id", model_field="model", params_field="opts",
        anthropic_version="2023-06-01", prime_via="off",  # every request by batch, as the template made it
        **FAST)  # the version that still takes temperature and top_k
    assert result.ok, result.message
    got = {r["custom_id"]: r["params"] for r in recording.received}
    shared = {"max_tokens": 100, "system": [{"type": "text", "text": "You are terse.",
                                             "cache_control": {"type": "ephemeral"}}],
              "stop_sequences": ["###"], "tools": [tool], "tool_choice": {"type": "tool", "name": "record_summary"},
              "metadata": {"user_id": "team-7"}}
    assert got["a"] == {"model": MODEL, **shared, "temperature": 0.2,
                        "messages": [{"role": "user", "content": "Summarise: plain row"}]}
    assert got["b"]["model"] == "claude-sonnet-4-5" and got["b"]["temperature"] == 0.2
    assert (got["c"]["model"], got["c"]["temperature"], got["c"]["top_k"]) == (MODEL, 0.9, 5)
    summary = result.summary
    assert set(summary["models"]) == {MODEL, "claude-sonnet-4-5"}
    assert summary["models"]["claude-sonnet-4-5"]["requests"] == 1 and summary["models"][MODEL]["requests"] == 2


async def test_a_row_with_bad_params_or_no_model_is_a_rejected_line_naming_the_field(recording, tmp_path):
    write_csv(tmp_path / "rows.csv", ["id", "text", "model", "opts"], [
        ["ok", "fine", "m-1", '{"top_p": 0.5}'],
        ["hot", "x", "m-1", '{"temperature": 3}'],
        ["typo", "x", "m-1", '{"temprature": 0.5}'],
        ["notjson", "x", "m-1", "{temperature: 1}"],
        ["list", "x", "m-1", "[1, 2]"],
        ["nomodel", "x", "", ""],
    ])
    result = await batch_scheduler.arun(tmp_path / "rows.csv", tmp_path / "out", base_url=recording.url,
                                        template="{text}", max_tokens=10, id_field="id", model_field="model",
                                        params_field="opts", anthropic_version="2023-06-01", **FAST)
    assert result.ok, result.message
    assert [r["custom_id"] for r in recording.received] == ["ok"]
    rejected = [orjson.loads(x) for x in (tmp_path / "out" / "rejected.jsonl").read_bytes().splitlines()]
    not_json = rejected.pop(2)  # its tail is orjson's own words
    assert (not_json["line"], not_json["error"].startswith("field 'opts' is not JSON: ")) == (5, True)
    assert [(r["line"], r["error"]) for r in rejected] == [
        (3, "field 'opts': params.temperature must be a number from 0 to 1 (got 3)"),
        (4, "field 'opts': params.temprature is not a field of the Messages API: did you mean temperature?"),
        (6, "field 'opts' must hold a JSON object (got list)"),
        (7, "field 'model' is empty and no --model is given"),
    ]


@pytest.mark.parametrize(("params", "message"), [
    ({"temperature": "hot"}, "--params: params.temperature must be a number from 0 to 1 (got 'hot')"),
    ({"messages": []}, "--params: params.messages is not allowed here: the template writes the messages"),
    ({"model": "x"}, "--params: params.model is not allowed here: use --model or --model-field"),
    ({"stream": True}, "--params: params.stream is not allowed here: streaming is not allowed in a batch"),
    ({"stop": ["x"]}, "--params: params.stop is not a field of the Messages API; it calls it stop_sequences"),
    ({"tool_choice": {"type": "tool"}}, "--params: params.tool_choice.name is required with type 'tool' "
                                        "(got {'type': 'tool'})"),
    ({"thinking": {"type": "enabled", "budget_tokens": 2000}},
     "--params: params.thinking.budget_tokens (2000) must be less than max_tokens (1000)"),
    ({"output_config": {"format": {"type": "json_schema"}}},
     "--params: params.output_config.format must be {\"type\": \"json_schema\", \"schema\": {...}} "
     "(got {'format': {'type': 'json_schema'}})"),
])
def test_params_are_checked_before_anything_is_read(tmp_path, params, message):
    s = Settings(template="{q}", model=MODEL, max_tokens=1000, params=params)
    with pytest.raises(UsageError) as err:
        make_sources([str(tmp_path / "rows.csv")], s)
    assert str(err.value) == message


def test_a_field_newer_than_the_table_passes_and_the_versions_are_known():
    assert check_params({"brand_new_field": {"x": 1}, "output_config": {"effort": "low"}}, openai=False,
                        anthropic_version="2023-06-01", max_tokens=10) is None
    assert check_params({"temperature": 0.5}, openai=False, anthropic_version="2026-10-21", max_tokens=10) == (
        "params.temperature is not accepted with anthropic-version 2026-10-21 (removed in 2026-10-21); give "
        "--anthropic-version 2023-06-01 to send it")
    assert check_params({"temperature": 1.5, "response_format": {"type": "json_object"}, "seed": 7}, openai=True,
                        anthropic_version="2026-10-21", max_tokens=10) is None
    assert check_params({"stop_sequences": ["x"]}, openai=True, anthropic_version="", max_tokens=10) == (
        "params.stop_sequences is not a field of chat completions; it calls it stop")


def test_params_come_as_a_file_or_an_object_and_shape_templated_rows_only(tmp_path):
    (tmp_path / "p.json").write_text('{"temperature": 0}')
    env = {"ANTHROPIC_API_KEY": "k"}
    assert build_settings({"params": str(tmp_path / "p.json")}, env).params == {"temperature": 0}
    assert build_settings({"params": {"top_k": 3}}, env).params == {"top_k": 3}
    (tmp_path / "bad.json").write_text("[1]")
    with pytest.raises(UsageError, match=r"^--params: expected a JSON object \(or a file holding one\), got \[1\]$"):
        build_settings({"params": str(tmp_path / "bad.json")}, env)
    with pytest.raises(UsageError, match=r"^--params .*missing.json: cannot read it \(No such file or directory\)$"):
        build_settings({"params": str(tmp_path / "missing.json")}, env)
    with pytest.raises(UsageError) as err:
        make_sources(["in.jsonl"], Settings(params={"top_k": 1}, cache_system=True))
    assert str(err.value) == ("--params, --cache-system shape requests made from rows: give --template too (ready "
                              "request lines carry their own params)")


def test_cache_system_needs_a_system_prompt_and_a_provider_that_takes_cache_control(tmp_path):
    with pytest.raises(UsageError, match=r"^--cache-system caches the --system prompt: give --system too$"):
        make_sources([], Settings(template="{q}", model=MODEL, max_tokens=5, cache_system=True))
    with pytest.raises(UsageError, match=r"^--cache-system: OpenAI caches a shared prompt prefix by itself"):
        make_sources([], Settings(template="{q}", model="gpt-4o", max_tokens=5, cache_system=True, system="s",
                                  provider="openai"))


def test_openai_rows_take_params_and_max_completion_tokens_alone():
    s = Settings(template="{q}", model="o4-mini", max_tokens=50, provider="openai", system="Be kind.",
                 params={"max_completion_tokens": 500, "reasoning_effort": "low"})
    line = orjson.loads(Renderer(s, "rows")({"q": "hi"}, 1))
    assert line["body"] == {"model": "o4-mini", "max_completion_tokens": 500, "reasoning_effort": "low",
                            "messages": [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "hi"}]}


def test_the_inline_proxy_keeps_a_cached_system_block_first_in_the_user_message():
    system = [{"type": "text", "text": "Shared.", "cache_control": {"type": "ephemeral"}}]
    body, problem = fold_system({"model": "m", "system": system, "messages": [{"role": "user", "content": "Q"}]},
                                "params")
    assert problem is None
    assert body == {"model": "m", "messages": [{"role": "user", "content": [
        *system, {"type": "text", "text": "Q"}]}]}
