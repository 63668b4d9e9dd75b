"""response_model=: the schema goes into each request as the provider wants it, every answer is checked, invalid
ones are sent again (retry_invalid) and then kept as `invalid` with the validation error (end to end, simulator)."""

from __future__ import annotations

import orjson
import pydantic
import pytest

import batch_scheduler
from batch_scheduler.core.errors import UsageError
from batch_scheduler.job.input.output_schema import output_params, strict_schema
from batch_scheduler.simulator.structured import Shape, answer_for, chat_shape, messages_shape

FAST = dict(poll_min=0.01, poll_max=0.05, batch_size=10, shards=4, api_key="sk-structured-test", retry_wait=0)
ROWS = dict(template="Who is {name}?", model="claude-haiku-4-5", max_tokens=60)
PEOPLE = [{"name": f"person {i}"} for i in range(40)]


class Person(pydantic.BaseModel):
    name: str
    age: int
    role: str | None = None


def test_the_schema_goes_into_each_provider_as_that_provider_wants_it():
    schema = Person.model_json_schema()
    assert output_params(Person, "anthropic", "2026-10-21") == {
        "output_config": {"format": {"type": "json_schema", "schema": schema}}}
    assert output_params(Person, "anthropic", "2023-06-01") == {
        "tools": [{"name": "Person", "description": "Answer with a Person", "input_schema": schema}],
        "tool_choice": {"type": "tool", "name": "Person"}}
    chat = output_params(Person, "openai", "2026-10-21")["response_format"]
    assert chat["type"] == "json_schema" and chat["json_schema"]["strict"] is True
    strict = chat["json_schema"]["schema"]
    assert strict["additionalProperties"] is False and strict["required"] == ["name", "age", "role"]
    assert "default" not in strict["properties"]["role"] and strict == strict_schema(schema)


def test_the_simulator_answers_each_shape_with_json_that_fits_and_a_share_that_does_not():
    schema = Person.model_json_schema()
    shape = messages_shape({"output_config": {"format": {"type": "json_schema", "schema": schema}}})
    assert shape == Shape("text", schema)
    forced = {"tools": [{"name": "f", "input_schema": schema}], "tool_choice": {"type": "tool", "name": "f"}}
    assert messages_shape(forced) == Shape("tool", schema, "f")
    assert chat_shape(output_params(Person, "openai", "2026-10-21")).kind == "text"
    fits = [answer_for(shape, f"c{i}", "batch", 0.0) for i in range(50)]
    assert all(Person.model_validate(x) for x in fits)
    spoilt = [answer_for(shape, f"c{i}", "batch", 0.2) for i in range(200)]
    bad = sum(1 for x in spoilt if "name" not in x)
    assert 20 <= bad <= 60  # about a fifth


async def test_valid_answers_are_columns_and_invalid_ones_are_sent_again_then_kept_invalid(sim, tmp_path):
    sim.config.invalid_json_rate = 0.25
    out = tmp_path / "out"
    result = await batch_scheduler.arun(PEOPLE, out, response_model=Person, retry_invalid=1, base_url=sim.url,
                                        **ROWS, **FAST)
    assert result.ok, result.message
    summary = result.summary
    invalid = summary["results"].get("invalid", 0)
    assert summary["results"]["succeeded"] + invalid == 40
    retried = summary["attempts"]["invalid_retried"]
    assert retried > invalid > 0 or (retried > 0 and invalid == 0)
    assert summary["attempts"]["requests_sent"] == 40 + retried  # every retry is a new attempt
    frame = batch_scheduler.to_pandas(out)
    assert list(frame.columns[-3:]) == ["json.name", "json.age", "json.role"]
    good = frame[frame["status"] == "succeeded"]
    assert good["json.name"].notna().all() and (good["json.age"] >= 0).all()
    assert set(frame.loc[frame["attempts"] == 2, "status"]) <= {"succeeded", "invalid"}
    assert (frame["attempts"] == 2).sum() == retried
    bad = frame[frame["status"] == "invalid"]
    assert len(bad) == invalid and bad["json.name"].isna().all()
    assert all(e.startswith("invalid: 1 validation error: name: Field required") for e in bad["error"])
    parsed = list(batch_scheduler.read_results(out, model=Person))
    assert sum(isinstance(d["parsed"], Person) for d in parsed) == 40 - invalid


async def test_without_retries_an_invalid_answer_is_final_and_billed(sim, tmp_path):
    sim.config.invalid_json_rate = 0.5
    result = await batch_scheduler.arun(PEOPLE, tmp_path / "out", response_model=Person, base_url=sim.url,
                                        **ROWS, **FAST)
    assert result.ok, result.message
    invalid = result.summary["results"]["invalid"]
    assert 5 <= invalid <= 35 and "invalid_retried" not in result.summary["attempts"]
    frame = batch_scheduler.to_pandas(tmp_path / "out")
    assert (frame.loc[frame["status"] == "invalid", "cost_usd"] > 0).all()  # an invalid answer was paid for


async def test_openai_answers_are_checked_the_same_way(sim, tmp_path):
    sim.config.invalid_json_rate = 0.3
    result = await batch_scheduler.arun(PEOPLE, tmp_path / "out", response_model=Person, retry_invalid=3,
                                        provider="openai", base_url=sim.url, template="Who is {name}?",
                                        model="gpt-4o-mini", max_tokens=60, **FAST)
    assert result.ok, result.message
    frame = batch_scheduler.to_pandas(tmp_path / "out")
    assert len(frame) == 40 and frame["json.age"].notna().sum() == result.summary["results"]["succeeded"]
    assert result.summary["attempts"]["invalid_retried"] > 0


async def test_response_model_needs_a_template_and_a_pydantic_model(sim, tmp_path):
    with pytest.raises(UsageError, match=r"^response_model= shapes templated rows: give template= too"):
        await batch_scheduler.arun([{"custom_id": "a", "params": {}}], tmp_path / "out", response_model=Person,
                                   base_url=sim.url, **FAST)
    with pytest.raises(UsageError, match=r"^response_model= must be a Pydantic model class"):
        await batch_scheduler.arun(PEOPLE, tmp_path / "out", response_model=dict, base_url=sim.url, **ROWS, **FAST)


def test_a_line_the_judge_refuses_keeps_the_providers_own_fields():
    from batch_scheduler.job.view.structured import Judge
    line = {"custom_id": "a", "result": {"type": "succeeded", "message": {"content": [
        {"type": "text", "text": orjson.dumps({"name": "x"}).decode()}]}}}
    kept = orjson.loads(Judge(Person)(orjson.dumps(line)))
    assert kept == {**line, "validation_error": "1 validation error: age: Field required"}
    line["result"]["message"]["content"][0]["text"] = '{"name": "x", "age": 3}'
    assert Judge(Person)(orjson.dumps(line)) is None
