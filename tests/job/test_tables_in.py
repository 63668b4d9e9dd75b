"""Tables as a job's input: DataFrames, Arrow tables, Datasets and Parquet files, a record batch at a time."""

from __future__ import annotations

import datetime
import decimal

import numpy as np
import orjson
import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import batch_scheduler
from batch_scheduler.commands.main import main
from batch_scheduler.job.input.tables import dumps_row, table_kind, table_rows
from batch_scheduler.simulator.process import SimulatorProcess

from ..helpers import read_results

FAST = dict(poll_min=0.01, poll_max=0.05, batch_size=50, shards=4, api_key="sk-tables-test")
ROWS = dict(template="Q: {question} ({asked})", model="claude-haiku-4-5", max_tokens=20)


@pytest.fixture(scope="module")
def sim_url():
    with SimulatorProcess([]) as s:
        yield s.url


def questions(n: int) -> dict[str, list]:
    return {"question": [f"what is {i}?" for i in range(n)], "asked": [datetime.date(2024, 1, 1 + i % 28)
                                                                        for i in range(n)]}


def spooled(out) -> list[dict]:
    return [orjson.loads(line) for line in (out / "input.jsonl").read_bytes().splitlines()]


def answered(out) -> list[str]:
    return sorted(r["custom_id"] for r in read_results(str(out)) if r["result"]["type"] == "succeeded")


async def test_a_pandas_dataframe_is_a_table_of_rows_not_its_column_names(sim, tmp_path):
    frame = pd.DataFrame(questions(60))
    result = await batch_scheduler.arun(frame, tmp_path / "out", base_url=sim.url, **ROWS, **FAST)
    assert (result.ok, result.summary["requests"]["accepted"]) == (True, 60)
    assert answered(tmp_path / "out") == sorted(f"input-{i}" for i in range(1, 61))  # the row's position
    assert spooled(tmp_path / "out")[0] == {"question": "what is 0?", "asked": "2024-01-01"}


@pytest.mark.parametrize("kind", ["polars", "polars-lazy", "arrow", "arrow-reader", "dataset"])
async def test_every_kind_of_table_gives_its_rows_in_order(sim, tmp_path, kind):
    data = questions(30)
    if kind.startswith("polars"):
        table = pl.DataFrame(data) if kind == "polars" else pl.LazyFrame(data)
    elif kind == "dataset":
        datasets = pytest.importorskip("datasets")
        table = datasets.Dataset.from_dict({"question": data["question"], "asked": [str(d) for d in data["asked"]]})
    else:
        arrow = pa.table(data)
        table = arrow if kind == "arrow" else pa.RecordBatchReader.from_batches(arrow.schema, arrow.to_batches(7))
    assert table_kind(table) == kind
    result = await batch_scheduler.arun(table, tmp_path / "out", base_url=sim.url, **ROWS, **FAST)
    assert result.ok and result.summary["requests"]["accepted"] == 30
    assert [r["question"] for r in spooled(tmp_path / "out")] == data["question"]
    assert spooled(tmp_path / "out")[2]["asked"] == "2024-01-03"


def test_cells_json_lacks_are_written_as_json():
    frame = pd.DataFrame({"when": [pd.Timestamp("2024-05-06 07:08:09"), pd.NaT],
                          "price": [decimal.Decimal("1.10"), None], "n": np.array([3, 4], dtype=np.int64),
                          "x": [np.float32(0.5), np.nan], "span": [pd.Timedelta(seconds=90), datetime.timedelta(0)],
                          "blob": [b"\x00\x01", b""]})
    rows = [orjson.loads(dumps_row(r)) for r in table_rows(frame)]
    assert rows == [{"when": "2024-05-06T07:08:09", "price": "1.10", "n": 3, "x": 0.5, "span": 90.0, "blob": "AAE="},
                    {"when": None, "price": None, "n": 4, "x": None, "span": 0.0, "blob": ""}]
    arrow = pa.table({"d": pa.array([decimal.Decimal("2.50")]), "t": pa.array([datetime.time(1, 2)])})
    assert list(table_rows(arrow)) == [{"d": decimal.Decimal("2.50"), "t": datetime.time(1, 2)}]


def test_a_reader_is_read_one_record_batch_at_a_time():
    pulled = []

    def batches():
        for i in range(5):
            pulled.append(i)
            yield pa.record_batch({"n": list(range(i * 4, i * 4 + 4))})
    reader = pa.RecordBatchReader.from_batches(pa.schema([("n", pa.int64())]), batches())
    rows = table_rows(reader, rows_per_batch=2)
    assert [next(rows) for _ in range(3)] == [{"n": 0}, {"n": 1}, {"n": 2}]
    assert len(pulled) <= 2  # the pyarrow reader may look one batch ahead; never the whole stream


@pytest.mark.parametrize(("given", "named"), [(pd.Series([1, 2]), "a pandas Series"),
                                              (np.array([{"a": 1}]), "a numpy ndarray"),
                                              (pl.Series([1]), "a polars Series")])
async def test_data_that_is_not_a_table_is_a_type_error_naming_it(tmp_path, given, named):
    with pytest.raises(TypeError) as err:
        await batch_scheduler.arun(given, tmp_path / "out", **ROWS, api_key="k")
    assert str(err.value) == (f"inputs: expected a table (a DataFrame, an Arrow table, a Dataset), a path, a list "
                              f"of paths, or an iterable of dicts, not {named}")
    assert not (tmp_path / "out").exists()


async def test_a_job_that_accepted_nothing_is_not_ok(sim, tmp_path):
    empty = await batch_scheduler.arun(pd.DataFrame({"question": [], "asked": []}), tmp_path / "a",
                                       base_url=sim.url, **ROWS, **FAST)
    assert (empty.ok, empty.exit_code, empty.message) == (False, 1, "no request was accepted: the input holds none")
    bad = await batch_scheduler.arun(pd.DataFrame({"other": ["x", "y"]}), tmp_path / "b", base_url=sim.url,
                                     **ROWS, **FAST)
    assert (bad.ok, bad.message) == (False, "no request was accepted: all 2 were rejected (see rejected.jsonl)")


def test_a_parquet_file_is_rows_on_the_command_line(sim_url, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-tables-test")
    pq.write_table(pa.table(questions(25)), tmp_path / "qs.parquet", row_group_size=10)
    code = main(["run", str(tmp_path / "qs.parquet"), "--out", str(tmp_path / "out"), "--base-url", sim_url,
                 "--template", ROWS["template"], "--model", ROWS["model"], "--max-tokens", "20",
                 "--poll-min", "0.01", "--poll-max", "0.05"])
    assert code == 0, capsys.readouterr().err
    assert answered(tmp_path / "out") == sorted(f"qs-{i}" for i in range(1, 26))
    assert main(["export", str(tmp_path / "out"), "-o", str(tmp_path / "back.parquet")]) == 0
    back = pq.read_table(tmp_path / "back.parquet")
    assert back.column("question").to_pylist() == questions(25)["question"]
    assert back.column("asked").to_pylist()[:2] == ["2024-01-01", "2024-01-02"]


def test_a_parquet_file_without_a_template_is_refused(tmp_path, capsys):
    pq.write_table(pa.table(questions(2)), tmp_path / "qs.parquet")
    assert main(["run", str(tmp_path / "qs.parquet"), "--out", str(tmp_path / "out"), "--dry-run"]) == 2
    assert capsys.readouterr().err == (f"batch-scheduler: {tmp_path / 'qs.parquet'}: a Parquet file holds rows: "
                                       f"give --template (and --model, --max-tokens) to make a request of each\n")
