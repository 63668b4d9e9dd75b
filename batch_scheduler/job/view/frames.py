"""A job back as a DataFrame, in Python: `to_arrow`, `to_pandas`, `to_polars`, `export`.

    answers = batch_scheduler.to_pandas(out)        # one row per input row, in input order
    joined = df.join(answers[["text", "status", "cost_usd"]])   # the caller's rows beside their answers

Each holds the table `export` writes (`export.table_of`): the rows' own columns (for a job from rows),
then the answer's (custom_id, status, text, stop_reason, json, model, token counts, cost_usd, error,
attempts); rejected rows are rows too, requests without a final result yet are left out. The table is
built as Arrow record batches of `export.ROW_GROUP` rows, so what is held beside the result is one
batch of Python values; pandas gets it with Arrow's `self_destruct` (each column freed once
converted), polars a batch at a time (each Arrow batch dropped once converted; the frame is left in
those chunks: `.rechunk()` makes it one). polars keeps Arrow's buffers of each batch (its numbers and
text as they are), so those batches are made with the system allocator: pyarrow's default pool
(mimalloc) held about 0.8 MiB more a batch between them, 80 MiB at 1,000,000 rows. `json_columns=`
expands the answers' JSON objects into columns (`json.<key>`, or the names given), typed by Arrow;
`rerun` pairs (see `rerun.py`) read as one table.
pyarrow (and pandas or polars) are optional extras, imported when called.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from typing import Any

import orjson

from batch_scheduler.core.errors import UsageError
from batch_scheduler.job.view.export import (
    FORMATS,
    ROW_GROUP,
    SUFFIXES,
    Exported,
    arrow_rows,
    arrow_schema,
    table_of,
)
from batch_scheduler.job.view.export import export as export_file
from batch_scheduler.job.view.rerun import follow, reruns_of
from batch_scheduler.job.view.results import ORDERS, JobView
from batch_scheduler.job.view.structured import fields_of

ARROW_MISSING = "{what} needs pyarrow: pip install 'batch-scheduler[{extra}]'"

JsonColumns = bool | Sequence[str] | None


def _import(module: str, what: str, extra: str) -> Any:
    try:
        return __import__(module, fromlist=["_"])
    except ImportError:
        raise UsageError(ARROW_MISSING.format(what=what, extra=extra).replace("pyarrow", module)) from None


def to_arrow(out: str | os.PathLike, *, order: str = "input", json_columns: JsonColumns = None,
             reruns: bool = True) -> Any:
    """The job in `out` as a pyarrow Table (see the module docstring); with `reruns`, each row's latest
    answer across `out`'s reruns (`rerun.py`)."""
    pa = _import("pyarrow", "to_arrow()", "parquet")
    table = _table(pa, out, order, reruns)
    if json_columns is None:  # a job of response_model=: its fields are columns
        json_columns = fields_of(os.fspath(out))
    return expand_json(pa, table, json_columns) if json_columns else table


def _table(pa: Any, out: str | os.PathLike, order: str, reruns: bool = False) -> Any:
    schema, batches = _parts(pa, out, order, reruns)
    return pa.concat_tables([schema.empty_table(), *batches])  # no copy: the batches joined


def _parts(pa: Any, out: str | os.PathLike, order: str, reruns: bool, pool: Any = None) -> tuple[Any, Iterator[Any]]:
    """(the table's schema, its record batches as pyarrow Tables of ROW_GROUP rows, made as they are read,
    their buffers from `pool`: None for pyarrow's default)."""
    if order not in ORDERS:
        raise ValueError(f"order must be one of {', '.join(ORDERS)}, not {order!r}")
    view = JobView.open(os.fspath(out))
    header, n_row, rows = table_of(view, order)
    if reruns and reruns_of(os.fspath(out)):
        rows = follow(os.fspath(out), rows, n_row)
    schema = arrow_schema(pa, header, n_row)
    return schema, _batches(pa, schema, rows, pool)


def _batches(pa: Any, schema: Any, rows: Iterator[tuple[str, list]], pool: Any = None) -> Iterator[Any]:
    pending: list[list[Any]] = []
    for kind, values in rows:
        if kind == "pending":
            continue
        pending.append(values)
        if len(pending) >= ROW_GROUP:
            yield arrow_rows(pa, schema, pending, pool)
            pending = []
    if pending:
        yield arrow_rows(pa, schema, pending, pool)


def arrow_batches(out: str | os.PathLike, order: str = "input") -> Iterator[Any]:
    """The job's table as pyarrow Tables of `ROW_GROUP` rows each, as they are read (for a writer of its own)."""
    pa = _import("pyarrow", "arrow_batches()", "parquet")
    view = JobView.open(os.fspath(out))
    header, n_row, rows = table_of(view, order)
    yield from _batches(pa, arrow_schema(pa, header, n_row), rows)


def to_pandas(out: str | os.PathLike, *, order: str = "input", json_columns: JsonColumns = None,
              reruns: bool = True) -> Any:
    """The job in `out` as a pandas DataFrame, one row per input row, in input order."""
    _import("pandas", "to_pandas()", "pandas")
    table = to_arrow(out, order=order, json_columns=json_columns, reruns=reruns)
    return table.to_pandas(self_destruct=True, split_blocks=True)


def to_polars(out: str | os.PathLike, *, order: str = "input", json_columns: JsonColumns = None,
              reruns: bool = True) -> Any:
    """The job in `out` as a polars DataFrame, one row per input row, in input order."""
    pl = _import("polars", "to_polars()", "polars")
    pa = _import("pyarrow", "to_polars()", "polars")
    if json_columns is None:  # a job of response_model=: its fields are columns
        json_columns = fields_of(os.fspath(out))
    pool = pa.system_memory_pool()  # the frame keeps what it can of each batch's buffers: see the docstring
    schema, batches = _parts(pa, out, order, reruns, pool)
    frames = []
    for batch in batches:  # each Arrow batch converted and dropped: the whole Arrow table is never held
        frames.append(pl.from_arrow(expand_json(pa, batch, json_columns, pool) if json_columns else batch,
                                    rechunk=False))
        del batch
    if not frames:
        empty = schema.empty_table()
        return pl.from_arrow(expand_json(pa, empty, json_columns) if json_columns else empty)
    # relaxed: a JSON key typed apart in two batches takes their common type; diagonal: keys met in some only
    return pl.concat(frames, how="diagonal_relaxed" if json_columns is True else "vertical_relaxed", rechunk=False)


def export(out: str | os.PathLike, path: str | os.PathLike, format: str | None = None,  # noqa: A002 - the CLI's
           order: str = "input") -> Exported:
    """Write the job in `out` to `path` as the CLI's `export` does; the format from `path`'s suffix unless given."""
    dest = os.fspath(path)
    fmt = format or SUFFIXES.get(os.path.splitext(dest)[1].lower())
    if fmt is None:
        raise ValueError(f"export(): say which format with format= one of {', '.join(FORMATS)} (or name the file "
                         f".jsonl, .csv or .parquet)")
    return export_file(os.fspath(out), fmt, dest, order)


def expand_json(pa: Any, table: Any, json_columns: JsonColumns, pool: Any = None) -> Any:
    """`table` with the `json` column's objects spread into columns: every key met (`json_columns=True`) or
    the keys named, each `json.<key>`, typed as Arrow infers them (a key that mixes kinds stays JSON text);
    the new columns' buffers from `pool` (None: pyarrow's default)."""
    texts = table.column("json").to_pylist() if "json" in table.column_names else []
    docs = [orjson.loads(t) if t else None for t in texts]
    if json_columns is True:
        keys: dict[str, None] = {}
        for doc in docs:
            if isinstance(doc, dict):
                keys.update(dict.fromkeys(doc))
        names = list(keys)
    else:
        names = list(json_columns or ())
    for key in names:
        values = [doc.get(key) if isinstance(doc, dict) else None for doc in docs]
        try:
            column = pa.array(values, memory_pool=pool)
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            column = pa.array([None if v is None else orjson.dumps(v).decode() for v in values], type=pa.string(),
                              memory_pool=pool)
        table = table.append_column(f"json.{key}", column)
    return table
