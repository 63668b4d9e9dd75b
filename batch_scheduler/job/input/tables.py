"""Tables as input: a DataFrame, an Arrow table or a Parquet file, read as rows in record batches.

    pandas DataFrame, polars DataFrame / LazyFrame, pyarrow Table / RecordBatchReader, a Hugging Face
    `Dataset`  ->  `table_rows`  ->  dicts, ROWS_PER_BATCH at a time  ->  the job's input.jsonl
    a .parquet file (`run rows.parquet --template ...`)  ->  `ParquetSource`, read in row groups

A table is never copied whole: it is sliced (pandas, polars, Arrow) or streamed (a LazyFrame's
batches, a reader's batches, a Dataset's Arrow batches), so what is held beside the caller's own
table is one batch of rows. pandas, polars, pyarrow and datasets are optional: a table's kind is told
from the type's module without importing anything, and each reader imports its library when used.
Cell values that JSON lacks (dates and times, decimals, NumPy and Arrow scalars, missing markers)
become JSON by `json_default`. A row's custom id is its position (`<stem>-<position + 1>`, as for a
CSV row), or its `--id-field`.
"""

from __future__ import annotations

import base64
import datetime
import decimal
import math
from collections.abc import Iterator
from typing import Any

import orjson

from batch_scheduler.core.errors import InputError

ROWS_PER_BATCH = 10_000  # rows turned into dicts at once
JSON_OPTIONS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS
PARQUET_SUFFIXES = (".parquet", ".pq")
PARQUET_MISSING = "reading Parquet needs pyarrow: pip install 'batch-scheduler[parquet]'"

# (module prefix, class name) -> kind; the module is the one the class is defined in (or a base class)
_KINDS = {("pandas", "DataFrame"): "pandas", ("polars", "DataFrame"): "polars",
          ("polars", "LazyFrame"): "polars-lazy", ("pyarrow", "Table"): "arrow",
          ("pyarrow", "RecordBatchReader"): "arrow-reader", ("pyarrow", "RecordBatch"): "arrow",
          ("datasets", "Dataset"): "dataset"}
_DATA_MODULES = ("pandas", "polars", "pyarrow", "numpy", "datasets")


def table_kind(obj: Any) -> str | None:
    """Which kind of table `obj` is ("pandas", "polars", "polars-lazy", "arrow", "arrow-reader",
    "dataset"), or None; nothing is imported to tell."""
    for cls in type(obj).__mro__:
        root = cls.__module__.partition(".")[0]
        kind = _KINDS.get((root, cls.__name__))
        if kind is not None:
            return kind
    return None


def data_object_name(obj: Any) -> str | None:
    """'a pandas Series', 'a numpy ndarray': a data library's object that is not a table; else None."""
    root = type(obj).__module__.partition(".")[0]
    return f"a {root} {type(obj).__name__}" if root in _DATA_MODULES else None


def table_rows(obj: Any, rows_per_batch: int = ROWS_PER_BATCH) -> Iterator[dict]:
    """The rows of the table `obj` as dicts, in order, read `rows_per_batch` at a time."""
    kind = table_kind(obj)
    if kind == "pandas":
        for start in range(0, len(obj), rows_per_batch):
            yield from obj.iloc[start:start + rows_per_batch].to_dict("records")
    elif kind == "polars":
        for piece in obj.iter_slices(rows_per_batch):
            yield from piece.to_dicts()
    elif kind == "polars-lazy":
        for piece in obj.collect_batches(chunk_size=rows_per_batch):
            yield from piece.to_dicts()
    elif kind in ("arrow", "arrow-reader"):
        for batch in (obj.to_batches(max_chunksize=rows_per_batch) if kind == "arrow" else obj):
            for start in range(0, batch.num_rows, rows_per_batch):
                yield from batch.slice(start, rows_per_batch).to_pylist()
    elif kind == "dataset":
        for table in obj.with_format("arrow").iter(batch_size=rows_per_batch):
            yield from table.to_pylist()
    else:
        raise TypeError(f"not a table: {type(obj).__name__}")


def json_default(value: Any) -> Any:
    """What orjson cannot write itself, as JSON: dates and times in ISO form, decimals as strings, NumPy and
    Arrow scalars as their Python values, missing markers (NaT, pd.NA) as null; TypeError for the rest."""
    kind = type(value).__name__
    if kind in ("NaTType", "NAType") or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, datetime.datetime | datetime.date | datetime.time):
        return value.isoformat()
    if isinstance(value, datetime.timedelta):
        return value.total_seconds()
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode()
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    root = type(value).__module__.partition(".")[0]
    if root == "pyarrow" and hasattr(value, "as_py"):
        return value.as_py()
    if root in ("numpy", "pandas") and hasattr(value, "tolist"):
        return value.tolist()
    if root == "pandas" and hasattr(value, "isoformat"):  # Timedelta and the like
        return value.isoformat()
    raise TypeError(f"Type is not JSON serializable: {type(value).__name__}")


def dumps_row(row: Any) -> bytes:
    return orjson.dumps(row, default=json_default, option=JSON_OPTIONS)


def is_parquet(path: str) -> bool:
    return path.lower().endswith(PARQUET_SUFFIXES)


def open_parquet(path: str) -> Any:
    """A Parquet file opened for reading in record batches; InputError when it cannot be."""
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise InputError(path, 1, PARQUET_MISSING) from None
    try:
        return pq.ParquetFile(path)
    except Exception as exc:  # pyarrow's ArrowInvalid and OSError: the file is not Parquet
        raise InputError(path, 1, f"not a readable Parquet file ({exc})") from None


def parquet_entries(path: str, f: Any) -> Iterator[tuple[int, int, Any, int]]:
    """(position, line number, row, row number) of every row of the open file `f`, a record batch at a time;
    a line number is position + 1, as a row's custom id counts it. Values come out as JSON gives them back
    (a date as its ISO text), exactly as rows from a DataFrame do."""
    pos = 0
    try:
        for batch in f.iter_batches(batch_size=ROWS_PER_BATCH):
            for row in batch.to_pylist():
                yield pos, pos + 1, orjson.loads(dumps_row(row)), pos + 1
                pos += 1
    except (OSError, ValueError) as exc:  # a damaged row group: the rows before it were read
        raise InputError(path, pos + 1, f"unreadable Parquet data ({exc})") from None
