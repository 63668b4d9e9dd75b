"""Back to a table: `export` writes a row per input request, in input order, each with its own answer."""

from __future__ import annotations

import csv

import orjson
import pyarrow.parquet as pq
import pytest

import batch_scheduler
from batch_scheduler.commands.main import main
from batch_scheduler.job.view.export import RESULT_COLUMNS, answer_text, error_text

from ..helpers import request

FAST = dict(poll_min=0.01, poll_max=0.05, shards=4, api_key="sk-export-test")
MODEL = "claude-haiku-4-5"
ROWS = [  # the columns a spreadsheet export holds: commas, quotes, newlines, non-ASCII, an empty cell
    {"id": "n-001", "title": "Rain, again", "body": 'He said "hi"\nand left.'},
    {"id": "n-002", "title": "Ünïcödé — ok", "body": "日本語のテキスト 🚀"},
    {"id": "n-003", "title": "Tabs\tand, commas", "body": ""},
    {"id": "n-004", "title": "", "body": "a\r\nwindows line"},
    {"id": "n-005", "title": "Last", "body": "ÿ"},
]
HEADER = ["id", "title", "body"]


def write_rows(path, rows) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(HEADER)
        for row in rows:
            w.writerow([row[h] for h in HEADER])


def read_csv(path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


@pytest.fixture
def rows_job(sim, tmp_path, monkeypatch):
    """A finished job over a CSV of 40 rows (the tricky ones among them) and one row without an id."""
    monkeypatch.chdir(tmp_path)
    rows = [*ROWS, *({"id": f"n-{i:03d}", "title": f"title {i}", "body": f"body {i}"} for i in range(6, 41))]
    rows.insert(7, {"id": "", "title": "no id", "body": "dropped"})
    write_rows(tmp_path / "news.csv", rows)

    async def go():
        return await batch_scheduler.arun(tmp_path / "news.csv", tmp_path / "out", base_url=sim.url, template=(
            "Summarise: {title}\n{body}"), model=MODEL, max_tokens=64, id_field="id", batch_size=7, **FAST)
    return tmp_path, rows, go


async def test_rows_come_back_in_input_order_with_their_columns_intact_and_their_own_answers(rows_job):
    tmp, rows, go = rows_job
    assert (await go()).ok
    assert main(["export", str(tmp / "out"), "-o", str(tmp / "out.csv")]) == 0
    got = read_csv(tmp / "out.csv")
    assert list(got[0]) == HEADER + list(RESULT_COLUMNS)
    assert [{h: r[h] for h in HEADER} for r in got] == rows  # every row, in input order, columns byte for byte
    for r in got:
        if r["id"]:
            assert (r["custom_id"], r["status"], r["text"], r["model"], r["error"], r["attempts"]) == (
                r["id"], "succeeded", "answer:" + r["id"], MODEL, "", "1")
            assert int(r["output_tokens"]) > 0 and float(r["cost_usd"]) > 0
    assert got[7]["status"] == "rejected" and got[7]["error"] == "invalid_input: missing id field 'id'"

    assert main(["export", str(tmp / "out"), "-o", str(tmp / "out.parquet")]) == 0
    table = pq.read_table(tmp / "out.parquet")
    assert table.column_names == HEADER + list(RESULT_COLUMNS)
    assert str(table.schema.field("output_tokens").type) == "int64"
    assert str(table.schema.field("cost_usd").type) == "double"
    as_rows = table.to_pylist()
    assert [{h: r[h] for h in HEADER} for r in as_rows] == rows
    assert [r["text"] for r in as_rows] == ["answer:" + r["id"] if r["id"] else None for r in rows]
    assert [r["custom_id"] for r in as_rows] == [r["id"] or None for r in rows]


async def test_shard_order_holds_the_same_rows_as_the_shards_hold_the_answers(rows_job):
    tmp, rows, go = rows_job
    assert (await go()).ok
    assert main(["export", str(tmp / "out"), "-o", str(tmp / "by-shard.csv"), "--order", "shard"]) == 0
    got = read_csv(tmp / "by-shard.csv")
    answered = [r for r in got if r["status"] == "succeeded"]
    shard_ids = [r["custom_id"] for r in batch_scheduler.read_results(tmp / "out", order="shard")]
    assert [r["custom_id"] for r in answered] == shard_ids != [r["id"] for r in rows if r["id"]]
    assert all(r["text"] == "answer:" + r["id"] and r["custom_id"] == r["id"] for r in answered)
    by_id = {r["id"]: r for r in rows}
    assert all({h: r[h] for h in HEADER} == by_id[r["id"]] for r in answered)
    assert got[-1]["status"] == "rejected"  # rejected rows last, in input order
    assert sorted(r["custom_id"] for r in got[:-1]) == sorted(r["id"] for r in rows if r["id"])


async def test_jsonl_is_the_result_lines_verbatim_in_input_order(rows_job, capsys):
    tmp, rows, go = rows_job
    assert (await go()).ok
    capsys.readouterr()
    assert main(["export", str(tmp / "out"), "-o", str(tmp / "out.jsonl")]) == 0
    lines = (tmp / "out.jsonl").read_bytes().splitlines()
    shard_lines = set()
    for path in sorted((tmp / "out" / "results").iterdir()):
        shard_lines.update(path.read_bytes().splitlines())
    assert set(lines) == shard_lines and len(lines) == len(shard_lines) == 40
    assert [orjson.loads(x)["custom_id"] for x in lines] == [r["id"] for r in rows if r["id"]]
    assert capsys.readouterr().err.splitlines() == [
        f"exported 40 result lines (40 with a result) to {tmp / 'out.jsonl'}, in input order",
        f"1 rejected request(s) have no result line: see {tmp / 'out'}/rejected.jsonl"]
    assert main(["export", str(tmp / "out"), "-o", str(tmp / "s.jsonl"), "--order", "shard"]) == 0
    assert sorted((tmp / "s.jsonl").read_bytes().splitlines()) == sorted(lines)


async def test_an_unfinished_job_exports_what_is_final_and_says_how_many_are_to_come(sim, tmp_path, capsys):
    # 10 cheap requests, then 20 that may each cost up to $0.75 at batch prices: --max-cost 1 lets only the first batch go
    lines = [request(f"cheap-{i}", max_tokens=1) for i in range(10)]
    lines += [request(f"dear-{i}", max_tokens=100_000) for i in range(20)]
    result = await batch_scheduler.arun(lines, tmp_path / "out", base_url=sim.url, batch_size=10, max_cost=1.0,
                                        **FAST)
    assert result.exit_code == 1 and result.message.startswith("stopped at --max-cost $1.00")
    capsys.readouterr()
    for order in ("input", "shard"):
        assert main(["export", str(tmp_path / "out"), "-o", str(tmp_path / f"{order}.csv"), "--order", order]) == 0
        assert [r["custom_id"] for r in read_csv(tmp_path / f"{order}.csv")] == (
            [f"cheap-{i}" for i in range(10)] if order == "input" else
            [r["custom_id"] for r in batch_scheduler.read_results(tmp_path / "out", order="shard")])
        assert capsys.readouterr().err.splitlines() == [
            f"exported 10 rows (10 with a result, 0 rejected) to {tmp_path / (order + '.csv')}, in {order} order",
            f"20 request(s) have no final result yet and are not in the file: finish the job "
            f"(`batch-scheduler resume {tmp_path / 'out'}`) and export again"]


async def test_a_job_of_ready_requests_exports_the_result_columns_alone(sim, tmp_path):
    items = [request("r-1", "one"), {"custom_id": "r-2"}, request("r-3", "three")]
    assert (await batch_scheduler.arun(items, tmp_path / "out", base_url=sim.url, **FAST)).ok
    assert main(["export", str(tmp_path / "out"), "-o", str(tmp_path / "t.csv")]) == 0
    got = read_csv(tmp_path / "t.csv")
    assert list(got[0]) == list(RESULT_COLUMNS)
    assert [(r["custom_id"], r["status"], r["text"], r["error"]) for r in got] == [
        ("r-1", "succeeded", "answer:r-1", ""), ("r-2", "rejected", "", "invalid_input: params missing or not an object"),
        ("r-3", "succeeded", "answer:r-3", "")]


async def test_jsonl_rows_give_every_key_in_the_order_first_met(sim, tmp_path):
    rows = [{"q": "first", "n": 1}, {"q": "second", "extra": {"deep": [1, 2]}}, {"n": 3, "q": "third"}]
    assert (await batch_scheduler.arun(rows, tmp_path / "out", base_url=sim.url, template="Q {q}", model=MODEL,
                                       max_tokens=20, **FAST)).ok
    assert main(["export", str(tmp_path / "out"), "-o", str(tmp_path / "t.csv")]) == 0
    got = read_csv(tmp_path / "t.csv")
    assert list(got[0])[:3] == ["q", "n", "extra"]
    assert [(r["q"], r["n"], r["extra"], r["custom_id"]) for r in got] == [
        ("first", "1", "", "input-1"), ("second", "", '{"deep":[1,2]}', "input-2"), ("third", "3", "", "input-3")]


async def test_export_needs_the_input_as_it_was(rows_job, capsys):
    tmp, _, go = rows_job
    assert (await go()).ok
    with open(tmp / "news.csv", "a", encoding="utf-8") as f:
        f.write("n-999,late,row\n")
    capsys.readouterr()
    assert main(["export", str(tmp / "out"), "-o", str(tmp / "x.csv")]) == 2
    assert capsys.readouterr().err == (f"batch-scheduler: {tmp / 'news.csv'} changed since the job read it (size or "
                                       f"content differs): its rows would not match the results\n")
    assert not (tmp / "x.csv").exists() and not (tmp / "x.csv.tmp").exists()
    assert main(["export", str(tmp / "out"), "-o", str(tmp / "x.jsonl"), "--order", "shard"]) == 0  # shards alone


async def test_an_openai_job_exports_its_answers_and_models(sim, tmp_path):
    rows = [{"q": "one", "model": "gpt-4o-mini"}, {"q": "two", "model": "gpt-4.1-nano"}, {"q": "three", "model": ""}]
    result = await batch_scheduler.arun(rows, tmp_path / "out", base_url=sim.url, provider="openai", template="{q}",
                                        model="gpt-4o-mini", model_field="model", max_tokens=20, **FAST)
    assert result.ok, result.message
    assert main(["export", str(tmp_path / "out"), "-o", str(tmp_path / "t.csv")]) == 0
    got = read_csv(tmp_path / "t.csv")
    assert list(got[0])[:4] == ["q", "model", "custom_id", "status"]  # the row's own `model` keeps its name
    assert [(r["q"], r["model"], r["custom_id"], r["status"], r["text"], r["result_model"]) for r in got] == [
        ("one", "gpt-4o-mini", "input-1", "succeeded", "answer:input-1", "gpt-4o-mini"),
        ("two", "gpt-4.1-nano", "input-2", "succeeded", "answer:input-2", "gpt-4.1-nano"),
        ("three", "", "input-3", "succeeded", "answer:input-3", "gpt-4o-mini")]
    assert all(int(r["output_tokens"]) > 0 for r in got)


def test_answer_and_error_columns_read_both_providers_forms():
    anthropic_ok = {"custom_id": "a", "result": {"type": "succeeded", "message": {"content": [
        {"type": "text", "text": "Hel"}, {"type": "tool_use", "input": {}}, {"type": "text", "text": "lo"}]}}}
    anthropic_err = {"custom_id": "a", "result": {"type": "errored", "error": {"type": "error", "error": {
        "type": "invalid_request_error", "message": "bad"}}}}
    chat_ok = {"custom_id": "c", "response": {"status_code": 200, "body": {"choices": [
        {"message": {"content": "Hi"}}]}}, "error": None}
    chat_400 = {"custom_id": "c", "response": {"status_code": 400, "body": {"error": {
        "type": "invalid_request_error", "message": "no"}}}, "error": None}
    expired = {"custom_id": "c", "response": None, "error": {"code": "batch_expired", "message": "late"}}
    responses_ok = {"custom_id": "r", "response": {"status_code": 200, "body": {"output": [
        {"type": "message", "content": [{"type": "output_text", "text": "Yes"}]}]}}}
    assert [answer_text(d) for d in (anthropic_ok, anthropic_err, chat_ok, chat_400, expired, responses_ok)] == [
        "Hello", None, "Hi", None, None, "Yes"]
    assert [error_text(d) for d in (anthropic_ok, anthropic_err, chat_ok, chat_400, expired)] == [
        None, "invalid_request_error: bad", None, "invalid_request_error: no", "batch_expired: late"]
