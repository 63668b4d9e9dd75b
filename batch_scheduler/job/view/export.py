"""`export DIR`: the job back as one table, a row per input request, in input order (or shard order).

Columns: for a job from rows and a template, the row's own columns in their order (a CSV's header; the
keys of JSONL rows, in the order first met), then RESULT_COLUMNS; for a job from ready requests,
RESULT_COLUMNS alone. A result column whose name a row already uses is written `result_<name>`.
Rejected lines are rows too (status `rejected`, the reason in `error`); requests without a final
result yet are left out and counted (`Exported.pending`). `--format jsonl` writes the result lines
verbatim instead, in the chosen order (rejected requests have none: they stay in rejected.jsonl).

Memory does not grow with the job: input order reads the input once through the job's own checks and
fetches each result by custom_id (`results.ResultIndex`); shard order reads the shards once and
fetches each row's columns from a spool of them written first (the same kind of index over it).
Rows are written as they come (Parquet: in row groups of ROW_GROUP). The file appears complete or not
at all: written to FILE.tmp, then renamed.
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

import orjson

from batch_scheduler.core.durable import replacing
from batch_scheduler.core.errors import UsageError
from batch_scheduler.job.input.reader import Source
from batch_scheduler.job.input.sources import TemplateSource
from batch_scheduler.job.view.answer import answer_json, answer_text, error_text, stop_reason
from batch_scheduler.job.view.results import (
    ORDERS,
    Entry,
    IdTable,
    JobView,
    ResultIndex,
    in_input_order,
    input_entries,
    shard_lines,
)
from batch_scheduler.job.view.structured import invalid_reason
from batch_scheduler.providers.base import OUTCOME_NAMES, Usage

FORMATS = ("jsonl", "csv", "parquet")
SUFFIXES = {".jsonl": "jsonl", ".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}  # a file name's format
RESULT_COLUMNS = ("custom_id", "status", "text", "stop_reason", "json", "model", "input_tokens", "output_tokens", "cache_read_tokens",
                  "cache_write_tokens", "cost_usd", "error", "attempts")
_INTS = {"input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens", "attempts"}
ROW_GROUP = 10_000
PARQUET_MISSING = "--format parquet needs pyarrow: pip install 'batch-scheduler[parquet]'"


@dataclass
class Exported:
    rows: int = 0  # rows written (for jsonl: result lines)
    results: int = 0  # of them, requests with a final result
    rejected: int = 0  # of them, rejected lines (not in a jsonl export: counted all the same)
    pending: int | None = 0  # accepted requests without a final result yet (not written); None: not known
    # (`--format jsonl --order shard` reads the shards alone, and no run has read all of the input yet)


# -- one result as columns ---------------------------------------------------------------------------

class Columns:
    """Result columns of one line, through the job's provider (status, usage, model) and price table."""

    def __init__(self, view: JobView):
        self._classify = view.provider.classify
        self._cost = view.prices.cost
        self._attempts = view.attempts_of

    def of_result(self, line: bytes, doc: dict) -> list[Any]:
        cid, outcome, usage, model = self._classify(line)
        text = answer_text(doc)
        data = answer_json(doc)
        if model is None:
            model = ((doc.get("response") or {}).get("body") or {}).get("model")
        u = Usage(*usage) if usage is not None else Usage()  # classify may give a plain tuple
        invalid = invalid_reason(doc)  # response_model=: its JSON did not fit (view/structured.py)
        if invalid is not None:
            data = None
        return [cid, OUTCOME_NAMES[outcome] if invalid is None else "invalid", text, stop_reason(doc),
                None if data is None else orjson.dumps(data).decode(), model, u.input_tokens, u.output_tokens,
                u.cache_read_tokens, u.cache_write_tokens, round(self._cost(model, u), 8) if usage is not None
                else 0.0, error_text(doc) if invalid is None else f"invalid: {invalid}", self._attempts(cid)]

    @staticmethod
    def of_rejected(cid: str | None, error: str, attempts: int) -> list[Any]:
        return [cid, "rejected", None, None, None, None, 0, 0, 0, 0, 0.0, error, attempts]


def rejected_reason(view: JobView, entry: Entry) -> tuple[str, int] | None:
    """(`kind: message`, attempts) of an input request that never got a result; None if it may still."""
    if entry.error is not None:
        return f"invalid_input: {entry.error}", 0
    if entry.cid in view.refused:
        return f"refused_by_api: {view.refused[entry.cid]}", 1
    return None


# -- the row's own columns ------------------------------------------------------------------------

def row_columns(sources: list[Source]) -> list[str] | None:
    """The rows' column names in order (None: a job of ready requests). JSONL rows: every key, in the
    order first met (one pass over them)."""
    if not sources or not isinstance(sources[0], TemplateSource):
        return None
    names: dict[str, None] = {}
    for src in sources:
        assert isinstance(src, TemplateSource)
        header = src.header()
        if header is not None:
            names.update(dict.fromkeys(header))
            continue
        for _, row, _ in src.entries(render=False):
            if row is not None:
                names.update(dict.fromkeys(row))
    return list(names)


def cell(value: Any) -> str | None:
    """A row's value as a table cell: strings as they are, other JSON values as JSON, null as empty."""
    if value is None or type(value) is str:
        return value
    return orjson.dumps(value).decode()


# -- writers --------------------------------------------------------------------------------------

class CsvOut:
    def __init__(self, f: BinaryIO, names: list[str], n_row: int):
        self._text = io.TextIOWrapper(f, encoding="utf-8", newline="", write_through=False)
        self._csv = csv.writer(self._text)
        self._csv.writerow(names)

    def add(self, values: list[Any]) -> None:
        self._csv.writerow(values)

    def close(self) -> None:
        self._text.flush()
        self._text.detach()


class ParquetOut:
    """Row columns as strings, then the result columns typed (tokens and attempts int64, cost float64)."""

    def __init__(self, f: BinaryIO, names: list[str], n_row: int):
        try:
            import pyarrow as pa
            import pyarrow.parquet as pq
        except ImportError:
            raise UsageError(PARQUET_MISSING) from None
        self._pa = pa
        self._schema = arrow_schema(pa, names, n_row)
        self._writer = pq.ParquetWriter(f, self._schema)
        self._rows: list[list[Any]] = []

    def add(self, values: list[Any]) -> None:
        self._rows.append(values)
        if len(self._rows) >= ROW_GROUP:
            self._flush()

    def _flush(self) -> None:
        if self._rows:
            self._writer.write_table(arrow_rows(self._pa, self._schema, self._rows))
            self._rows = []

    def close(self) -> None:
        self._flush()
        self._writer.close()


def arrow_schema(pa: Any, names: list[str], n_row: int) -> Any:
    """Row columns as strings, then the result columns typed (tokens and attempts int64, cost float64)."""
    kinds = {"cost_usd": pa.float64(), **{n: pa.int64() for n in _INTS}}
    return pa.schema([(n, pa.string()) for n in names[:n_row]]
                     + [(n, kinds.get(c, pa.string())) for n, c in zip(names[n_row:], RESULT_COLUMNS, strict=True)])


def arrow_rows(pa: Any, schema: Any, rows: list[list[Any]], pool: Any = None) -> Any:
    """A pyarrow Table of `rows` (lists of values in the schema's order), its buffers from `pool` (None:
    pyarrow's default)."""
    columns = list(zip(*rows, strict=True))
    return pa.Table.from_arrays([pa.array(c, type=t.type, memory_pool=pool) for c, t in zip(columns, schema, strict=True)],
                                schema=schema)


# -- export ---------------------------------------------------------------------------------------

def export(out_dir: str, fmt: str, dest: str, order: str = "input") -> Exported:
    """Write the job in `out_dir` to `dest` as `fmt`; what was written, and what is still to come."""
    if fmt not in FORMATS:
        raise UsageError(f"--format {fmt!r}: choose one of {', '.join(FORMATS)}")
    if order not in ORDERS:
        raise UsageError(f"--order {order!r}: choose one of {', '.join(ORDERS)}")
    if fmt == "parquet":
        try:
            import pyarrow.parquet  # noqa: F401 - checked before any work is done
        except ImportError:
            raise UsageError(PARQUET_MISSING) from None
    view = JobView.open(out_dir)
    with replacing(dest, buffering=1 << 20) as f:
        return _write(view, fmt, order, f)


def _write(view: JobView, fmt: str, order: str, f: BinaryIO) -> Exported:
    if fmt == "jsonl" and order == "shard":
        done = Exported()
        for _, _, line in shard_lines(view):
            f.write(line + b"\n")
            done.rows += 1
        done.results = done.rows
        done.pending = None if view.accepted is None else max(0, view.accepted - done.rows - len(view.refused))
        return done
    sources = view.sources()
    if fmt == "jsonl":
        return _jsonl_in_input_order(view, sources, f)
    header, n_row, rows = table_of(view, order, sources)
    out = (CsvOut if fmt == "csv" else ParquetOut)(f, header, n_row)
    try:
        done, pending = Exported(), 0
        for kind, values in rows:
            if kind == "pending":
                pending += 1
                continue
            out.add(values)
            done.rows += 1
            done.results += kind == "result"
            done.rejected += kind == "rejected"
        done.pending = pending
    finally:
        out.close()
    return done


def table_of(view: JobView, order: str, sources: list[Source] | None = None
             ) -> tuple[list[str], int, Iterator[tuple[str, list]]]:
    """(the column names, how many of them are the rows' own, the rows as (kind, values)): what `export`
    writes, for any writer. A kind is "result", "rejected" or "pending" (values empty: not written)."""
    sources = view.sources() if sources is None else sources
    names = row_columns(sources)
    header = (names or []) + [f"result_{c}" if names and c in names else c for c in RESULT_COLUMNS]
    rows = _input_order(view, sources, names) if order == "input" else _shard_order(view, sources, names)
    return header, len(names or []), rows


def _row_values(names: list[str] | None) -> Callable[[dict | None], list[Any]]:
    if names is None:
        return lambda row: []
    return lambda row: [cell(row.get(n)) for n in names] if row is not None else [None] * len(names)


def _input_order(view: JobView, sources: list[Source], names: list[str] | None) -> Iterator[tuple[str, list]]:
    columns, row_values = Columns(view), _row_values(names)
    with ResultIndex(view) as index:
        for entry, found in in_input_order(view, index, sources):
            if found is not None:
                yield "result", row_values(entry.row) + columns.of_result(*found)
                continue
            why = rejected_reason(view, entry)
            if why is None:
                yield "pending", []
            else:
                yield "rejected", row_values(entry.row) + Columns.of_rejected(entry.cid, *why)


def _jsonl_in_input_order(view: JobView, sources: list[Source], f: BinaryIO) -> Exported:
    done, pending = Exported(), 0
    with ResultIndex(view) as index:
        for entry, found in in_input_order(view, index, sources):
            if found is not None:
                f.write(found[0] + b"\n")
                done.rows += 1
                done.results += 1
            elif rejected_reason(view, entry) is not None:
                done.rejected += 1
            else:
                pending += 1
    done.pending = pending
    return done


def _shard_order(view: JobView, sources: list[Source], names: list[str] | None) -> Iterator[tuple[str, list]]:
    """Rows in the order the shards hold the results, then the rejected ones in input order. The rows'
    columns and the rejected rows are spooled first (files beside the ledger, removed after), so the
    shards are read once, in order."""
    columns, row_values = Columns(view), _row_values(names)
    base = os.path.join(view.out_dir, f".export-{os.getpid()}")
    with _scratch(base + ".rows") as rows, _scratch(base + ".rejected") as rejected:
        table = IdTable(2, (view.accepted or view.finished) if names is not None else 0)
        waiting = 0  # accepted and not refused: a result is due
        for entry in input_entries(view, sources):
            why = rejected_reason(view, entry) if entry.error is not None or entry.cid in view.refused else None
            if why is not None:
                rejected.write(orjson.dumps(row_values(entry.row) + Columns.of_rejected(entry.cid, *why)) + b"\n")
                continue
            waiting += 1
            if names is not None:
                assert entry.cid is not None
                line = orjson.dumps([entry.cid, row_values(entry.row)])
                table.add(entry.cid, rows.tell(), len(line))
                rows.write(line + b"\n")
        rows.flush()
        results = 0
        for _, _, line in shard_lines(view):
            doc = orjson.loads(line)
            values = _spooled(rows, table, doc["custom_id"]) if names is not None else []
            results += 1
            yield "result", (values if values is not None else row_values(None)) + columns.of_result(line, doc)
        rejected.seek(0)
        for line in rejected:
            yield "rejected", orjson.loads(line)
        for _ in range(max(0, waiting - results)):
            yield "pending", []


def _spooled(rows: BinaryIO, table: IdTable, cid: str) -> list | None:
    for pos, length in table.find(cid):
        kept = orjson.loads(os.pread(rows.fileno(), length, pos))
        if kept[0] == cid:
            return kept[1]
    return None


@contextlib.contextmanager
def _scratch(path: str) -> Iterator[BinaryIO]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w+b", buffering=1 << 20) as f:
            yield f
    finally:
        os.unlink(path)
