"""A job back as a DataFrame: to_pandas / to_polars / to_arrow / export, one row per input row, in input order."""

from __future__ import annotations

import csv

import pandas as pd
import polars as pl
import pyarrow as pa
import pytest

import batch_scheduler
from batch_scheduler.job.view.answer import answer_json, stop_reason
from batch_scheduler.job.view.export import RESULT_COLUMNS

FAST = dict(poll_min=0.01, poll_max=0.05, batch_size=7, shards=4, api_key="sk-frames-test")
ROWS = dict(template="Q: {question}", model="claude-haiku-4-5", max_tokens=20)


@pytest.fixture
async def finished(sim, tmp_path):
    """A job over a DataFrame of 30 rows, the 5th of which has no question (rejected)."""
    frame = pd.DataFrame({"question": [f"what is {i}?" for i in range(30)], "n": list(range(30))})
    rows = frame.to_dict("records")
    del rows[4]["question"]
    result = await batch_scheduler.arun(rows, tmp_path / "out", base_url=sim.url, **ROWS, **FAST)
    assert result.ok, result.message
    return frame, tmp_path / "out"


async def test_to_pandas_is_a_row_per_input_row_in_input_order_with_the_answer_beside(finished):
    frame, out = finished
    got = batch_scheduler.to_pandas(out)
    assert list(got.columns) == ["question", "n", *RESULT_COLUMNS]
    assert len(got) == 30 and list(got["n"]) == [str(i) for i in range(30)]  # row cells as export writes them
    answered = got.drop(index=4)
    assert list(answered["text"]) == [f"answer:input-{i + 1}" for i in range(30) if i != 4]
    assert set(answered["status"]) == {"succeeded"} and set(answered["stop_reason"]) == {"end_turn"}
    assert set(answered["model"]) == {"claude-haiku-4-5"} and (answered["output_tokens"] > 0).all()
    assert (answered["cost_usd"] > 0).all() and answered["error"].isna().all()
    assert got.loc[4, "status"] == "rejected" and got.loc[4, "error"] == ("invalid_input: missing field "
                                                                          "'question' for the template")
    joined = frame.join(got[["text", "status"]])
    assert joined.loc[7, "text"] == "answer:input-8"


async def test_to_polars_and_to_arrow_hold_the_same_table(finished):
    _, out = finished
    arrow = batch_scheduler.to_arrow(out)
    assert isinstance(arrow, pa.Table) and arrow.schema.field("cost_usd").type == pa.float64()
    assert arrow.schema.field("input_tokens").type == pa.int64()
    polars = batch_scheduler.to_polars(out)
    assert isinstance(polars, pl.DataFrame) and polars.to_dicts() == arrow.to_pylist()
    frame = batch_scheduler.to_pandas(out)
    assert frame["text"].fillna("-").tolist() == [t or "-" for t in arrow.column("text").to_pylist()]
    assert frame["cost_usd"].tolist() == arrow.column("cost_usd").to_pylist()


async def test_export_writes_what_the_cli_writes_its_format_from_the_name(finished, tmp_path):
    _, out = finished
    done = batch_scheduler.export(out, tmp_path / "answers.csv")
    assert (done.rows, done.results, done.rejected, done.pending) == (30, 29, 1, 0)
    with open(tmp_path / "answers.csv", newline="") as f:
        assert [r["text"] for r in csv.DictReader(f)][:2] == ["answer:input-1", "answer:input-2"]
    batch_scheduler.export(out, tmp_path / "answers.bin", format="parquet")
    assert pa.parquet.read_table(tmp_path / "answers.bin").num_rows == 30
    with pytest.raises(ValueError, match=r"^export\(\): say which format with format= one of jsonl, csv, parquet"):
        batch_scheduler.export(out, tmp_path / "answers.txt")


def test_tool_calls_and_json_answers_are_the_json_column():
    tool = {"custom_id": "a", "result": {"type": "succeeded", "message": {"stop_reason": "tool_use", "content": [
        {"type": "text", "text": "calling"}, {"type": "tool_use", "name": "f", "input": {"x": 1}}]}}}
    chat = {"custom_id": "b", "response": {"status_code": 200, "body": {"choices": [{"finish_reason": "tool_calls",
            "message": {"tool_calls": [{"function": {"name": "f", "arguments": "{\"y\": [2]}"}}]}}]}}}
    fenced = {"custom_id": "c", "result": {"type": "succeeded", "message": {"stop_reason": "end_turn", "content": [
        {"type": "text", "text": "```json\n{\"z\": true}\n```"}]}}}
    prose = {"custom_id": "d", "response": {"body": {"choices": [{"finish_reason": "length",
                                                                   "message": {"content": "not json"}}]}}}
    assert [answer_json(d) for d in (tool, chat, fenced, prose)] == [{"x": 1}, {"y": [2]}, {"z": True}, None]
    assert [stop_reason(d) for d in (tool, chat, fenced, prose)] == ["tool_use", "tool_calls", "end_turn", "length"]
    assert answer_json({"result": {"message": {"content": "oops"}}}) is None  # an odd shape is no answer
    assert answer_json({"response": {"body": {"choices": [{"message": {"tool_calls": [{"function": 3}]}}]}}}) is None


def test_json_columns_spread_the_answers_objects_into_typed_columns():
    from batch_scheduler.job.view.frames import expand_json
    table = pa.table({"custom_id": ["a", "b", "c"], "json": ['{"n": 1, "tag": "x"}', None, '{"n": 2, "tag": [1]}']})
    every = expand_json(pa, table, True)
    assert every.column_names == ["custom_id", "json", "json.n", "json.tag"]
    assert every.column("json.n").to_pylist() == [1, None, 2] and every.schema.field("json.n").type == pa.int64()
    assert every.column("json.tag").to_pylist() == ['"x"', None, "[1]"]  # mixed kinds stay JSON text
    assert expand_json(pa, table, ["n"]).column_names == ["custom_id", "json", "json.n"]
