"""Rows + a prompt template (`--template`): one request per CSV row or JSONL object.

    rows (.csv with a header, .csv.gz, .jsonl, .jsonl.gz)  ->  template.Renderer(row)  ->  request line

A `TemplateSource` has `JsonlSource`'s interface (`unit`, `path`, `index`, `blocks`), so the batcher,
a chunk's replay (`reader.span_blocks`, `replay.Replay`) and the dry run treat it like any input. A row
becomes a request line (bytes), or a `str` saying what is wrong with it (the validator rejects it
with the file and line number).

Positions and line numbers. A position counts physical lines after the CSV header (from the top of
a JSONL file), so line number = first data line + position, exactly as an editor shows it. A CSV row
whose quoted field spans k lines is one item followed by k-1 blank markers (skipped silently, like
blank lines), so positions and line numbers stay in step through multi-line fields; for the usual
file of one row a line, a position is the row index. Reading from a position parses (but does not
render) the rows before it: CSV cannot be entered in the middle.

Files are read in a thread, `ROWS_PER_BLOCK` rows or `ROW_BLOCK_BYTES` of requests at a time.
"""

from __future__ import annotations

import asyncio
import csv
import gzip
import io
import itertools
import os
import zlib
from collections.abc import AsyncGenerator, Iterator
from typing import Any

import orjson

from batch_scheduler.core.errors import InputError, UsageError
from batch_scheduler.core.settings import Settings
from batch_scheduler.job.input.params import check_params
from batch_scheduler.job.input.reader import (
    Block,
    JsonlSource,
    ObjectJsonlSource,
    Source,
    compressed_problem,
)
from batch_scheduler.job.input.tables import is_parquet, open_parquet, parquet_entries
from batch_scheduler.job.input.template import Item, Renderer, check_template
from batch_scheduler.job.input.validate import BLANK
from batch_scheduler.providers import provider_class
from batch_scheduler.state.objects import is_object_url

ROWS_PER_BLOCK = 4096
ROW_BLOCK_BYTES = 4 << 20  # a block's requests are many small lines (no one large buffer, as a JSONL read has)
ROW_SUFFIXES = (".csv", ".csv.gz", ".jsonl", ".jsonl.gz", ".parquet", ".pq")
csv.field_size_limit(256 << 20)  # an article is longer than csv's default 128 KiB field

Entry = tuple[int, int, Any, int]  # (position, line number, row dict or Item, row number)


def stem_of(path: str) -> str:
    name = os.path.basename(path)
    for suffix in sorted(ROW_SUFFIXES, key=len, reverse=True):
        if name.lower().endswith(suffix):
            return name[:-len(suffix)]
    return name


class TemplateSource:
    """Rows of one file rendered through the template; same interface as `reader.JsonlSource`."""

    unit = "rows"

    def __init__(self, path: str, index: int, settings: Settings):
        self.path = path
        self.index = index
        self.csv = path.lower().endswith((".csv", ".csv.gz"))
        self.parquet = is_parquet(path)  # read in record batches (tables.py)
        self.render = Renderer(settings, settings.job_name or stem_of(path))

    def _open(self) -> Any:
        """Bytes for JSONL; text for CSV (UTF-8, a spreadsheet's BOM dropped, newlines left to csv; bytes that
        are not UTF-8 kept as surrogates, so the row holding them is rejected with its own line number);
        a ParquetFile for Parquet."""
        if self.parquet:
            return open_parquet(self.path)
        gz = self.path.lower().endswith(".gz")
        raw = gzip.open(self.path, "rb") if gz else open(self.path, "rb")  # noqa: SIM115
        return io.TextIOWrapper(raw, encoding="utf-8-sig", errors="surrogateescape", newline="") if self.csv else raw

    async def blocks(self, start_pos: int = 0, start_line: int = 1) -> AsyncGenerator[Block, None]:
        """Blocks of items from position `start_pos` (its line number is read from the file itself)."""
        f = self._open()  # opened and closed on the loop: a cancelled thread hop would leak the file
        line = start_line
        try:
            items = self._items(f)
            try:
                if start_pos:
                    await asyncio.to_thread(skip, items, start_pos)
                while block := await asyncio.to_thread(self._block, items):
                    line = block.first_line + len(block.lines)
                    yield block
            except (EOFError, gzip.BadGzipFile, zlib.error) as err:
                raise InputError(self.path, line, compressed_problem(err)) from None
        finally:
            f.close()

    def entries(self, *, render: bool = True) -> Iterator[tuple[int, dict | None, Item | None]]:
        """Every row from the top, in the caller's thread (export: no event loop): (line number, the row as
        read or None when it is not one, its item: the request line, or what is wrong; None unless `render`)."""
        f = self._open()
        try:
            for _, line_no, row, row_no in self._items(f):
                if type(row) is not dict:
                    yield line_no, None, row
                else:
                    yield line_no, row, self.render(row, row_no) if render else None
        finally:
            f.close()

    def header(self) -> list[str] | None:
        """A CSV or Parquet file's column names (None for JSONL rows, whose keys are their own)."""
        if self.parquet:
            f = self._open()
            try:
                return list(f.schema_arrow.names)
            finally:
                f.close()
        if not self.csv:
            return None
        f = self._open()
        try:
            return next(csv.reader(f), [])
        except UnicodeDecodeError:
            raise InputError(self.path, 1, "not UTF-8 at or after this line; save the file as UTF-8") from None
        finally:
            f.close()

    def _block(self, items: Iterator[Entry]) -> Block | None:
        """Read and render the next block (in a thread); None at the end of the file."""
        lines: list[Item] = []
        first_pos = first_line = 0
        nbytes = 0
        for pos, line_no, row, row_no in items:
            if not lines:
                first_pos, first_line = pos, line_no
            item = self.render(row, row_no) if type(row) is dict else row
            lines.append(item)
            nbytes += len(item)
            if len(lines) >= ROWS_PER_BLOCK or nbytes >= ROW_BLOCK_BYTES:
                break
        return Block(self.index, lines, first_line, first_pos) if lines else None

    def _items(self, f: Any) -> Iterator[Entry]:
        if self.parquet:
            return parquet_entries(self.path, f)
        return self._csv_items(f) if self.csv else self._jsonl_items(f)

    def _csv_items(self, f: Any) -> Iterator[Entry]:
        reader = csv.reader(f)
        row_no = 0
        header = next(reader, None)
        if header is None:
            return
        if not_utf8(header) is not None:
            raise InputError(self.path, reader.line_num, "the header row holds bytes that are not UTF-8; save the "
                                                         "file as UTF-8")
        base = reader.line_num + 1  # the line number of position 0
        row: list[str] | dict | str | None
        while True:
            before = reader.line_num
            try:
                row = next(reader, None)
            except csv.Error as exc:
                row = f"unreadable CSV row: {exc}"
            if row is None:
                return
            if isinstance(row, list):
                row = self._csv_row(header, row)
            if row is not BLANK:
                row_no += 1
            yield before + 1 - base, before + 1, row, row_no
            for extra in range(before + 2, reader.line_num + 1):  # the other lines of a multi-line row
                yield extra - base, extra, BLANK, row_no

    @staticmethod
    def _csv_row(header: list[str], row: list[str]) -> dict | str:
        """A row as a dict; a short row lacks its last fields (named if the template uses them)."""
        if not row:
            return BLANK
        if len(row) > len(header):
            return f"row has {len(row)} fields, the header has {len(header)} (a quote missing?)"
        if (bad := not_utf8(row)) is not None:
            name = header[bad] if bad < len(header) else str(bad + 1)
            return f"bytes that are not UTF-8 in field {name!r}; save the file as UTF-8"
        return dict(zip(header, row, strict=False))

    def _jsonl_items(self, f: Any) -> Iterator[Entry]:
        row_no = 0
        for pos, raw in enumerate(f):
            if not raw.strip():
                yield pos, pos + 1, BLANK, row_no
                continue
            row_no += 1
            try:
                row = orjson.loads(raw)
            except orjson.JSONDecodeError as exc:
                row = f"malformed JSON row: {exc}"
            else:
                if type(row) is not dict:
                    row = f"row is not a JSON object (got {type(row).__name__})"
            yield pos, pos + 1, row, row_no


def not_utf8(fields: list[str]) -> int | None:
    """The index of the first field that held bytes that are not UTF-8 (read as surrogates), or None."""
    for i, text in enumerate(fields):
        if not text.isascii():
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:
                return i
    return None


def skip(items: Iterator[Entry], n: int) -> None:
    """Read past the first `n` positions (parsed to keep CSV in step, not rendered)."""
    for _ in itertools.islice(items, n):
        pass


ROW_OPTIONS = ("params", "cache_system", "model_field", "params_field")  # what shapes templated rows only


def make_sources(paths: list[str], settings: Settings) -> list[Source]:
    """The job's inputs: rows through --template, or JSONL request lines."""
    if settings.template:
        return list(template_sources(paths, settings))
    given = [name for name in ROW_OPTIONS if getattr(settings, name)]
    if given:
        flags = ", ".join("--" + name.replace("_", "-") for name in given)
        raise UsageError(f"{flags} shape{'s' if len(given) == 1 else ''} requests made from rows: give --template "
                         f"too (ready request lines carry their own params)")
    for path in paths:
        if is_parquet(path):
            raise UsageError(f"{path}: a Parquet file holds rows: give --template (and --model, --max-tokens) to "
                             f"make a request of each")
    return [ObjectJsonlSource(p, i, max_line_bytes=settings.batch_bytes) if is_object_url(p)
            else JsonlSource(p, i, max_line_bytes=settings.batch_bytes) for i, p in enumerate(paths)]


def template_sources(paths: list[str], settings: Settings) -> list[TemplateSource]:
    """One source per rows file; UsageError when the options cannot make requests out of rows."""
    if not settings.template:
        raise UsageError("--template is required to read rows")
    if settings.max_tokens is None:
        raise UsageError("--max-tokens is required with --template (the answer length of each request)")
    if not settings.model and not settings.model_field:
        raise UsageError("--model (or CLAUDE_MODEL / OPENAI_MODEL) is required with --template, unless "
                         "--model-field names each row's")
    check_template(settings.template)
    check_row_options(settings)
    for path in paths:
        if not path.lower().endswith(ROW_SUFFIXES):
            raise UsageError(f"{path}: rows for --template must be {', '.join(ROW_SUFFIXES)} files")
    return [TemplateSource(p, i, settings) for i, p in enumerate(paths)]


def check_row_options(settings: Settings) -> None:
    """--params, --cache-system: UsageError naming what is wrong, before anything is read or sent."""
    openai = provider_class(settings.provider).row_api == "chat"
    if settings.cache_system:
        if openai:
            raise UsageError("--cache-system: OpenAI caches a shared prompt prefix by itself (no cache_control); "
                             "drop the flag")
        if not settings.system:
            raise UsageError("--cache-system caches the --system prompt: give --system too")
    if settings.params:
        problem = check_params(settings.params, openai=openai, anthropic_version=settings.anthropic_version,
                               max_tokens=settings.max_tokens)
        if problem:
            raise UsageError(f"--params: {problem}")
