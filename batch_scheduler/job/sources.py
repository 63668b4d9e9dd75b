"""Rows + a prompt template (`--template`): one request per CSV row or JSONL object.

    rows (.csv with a header, .csv.gz, .jsonl, .jsonl.gz)  ->  template.format_map(row)  ->  request line

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

Files are read in a thread, `ROWS_PER_BLOCK` rows or `reader.BLOCK_BYTES` of requests at a time.
"""

from __future__ import annotations

import asyncio
import csv
import gzip
import io
import itertools
import os
import re
import string
from collections.abc import AsyncIterator, Iterator
from typing import Any

import orjson

from batch_scheduler.core.errors import InputError, UsageError
from batch_scheduler.core.objects import is_object_url
from batch_scheduler.core.settings import Settings
from batch_scheduler.job.reader import BLOCK_BYTES, Block, JsonlSource, ObjectJsonlSource, Source
from batch_scheduler.job.validate import BLANK
from batch_scheduler.providers.base import encode

ROWS_PER_BLOCK = 4096
ROW_SUFFIXES = (".csv", ".csv.gz", ".jsonl", ".jsonl.gz")
_UNSAFE = re.compile(r"[^a-zA-Z0-9_-]")
csv.field_size_limit(256 << 20)  # an article is longer than csv's default 128 KiB field

Item = bytes | str  # a request line, or what is wrong with the row (BLANK: nothing, skip silently)
Entry = tuple[int, int, Any, int]  # (position, line number, row dict or Item, row number)


class Fields:
    """The mapping `format_map` reads a row through: missing names are recorded, not raised."""

    __slots__ = ("row", "missing")

    def __init__(self, row: dict):
        self.row = row
        self.missing: list[str] = []

    def __getitem__(self, key: str) -> Any:
        try:
            value = self.row[key]
        except KeyError:
            self.missing.append(key)
            return ""
        if type(value) is str:
            return value
        return "" if value is None else orjson.dumps(value).decode()


def check_template(template: str) -> None:
    """Refuse a template `str.format` cannot read (a lone `{` or `}`: write `{{` / `}}`)."""
    try:
        names = [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
    except ValueError as exc:
        raise UsageError(f"--template: {exc} (write {{{{ and }}}} for literal braces)") from None
    if any(name == "" or name.isdigit() for name in names):
        raise UsageError("--template: placeholders need a field name, e.g. {content}")


def safe_id(stem: str, row_number: int) -> str:
    """`<file stem>-<row number>` in custom_id characters, at most 64 (the stem is cut, not the number).

    The row number counts data rows from 1 (`articles-1` is the first row after the header); blank
    lines and the extra lines of multi-line fields do not count; bad rows do (fixing one later does not
    move the ids after it).
    """
    suffix = f"-{row_number}"
    return _UNSAFE.sub("_", stem)[:64 - len(suffix)] + suffix


def stem_of(path: str) -> str:
    name = os.path.basename(path)
    for suffix in sorted(ROW_SUFFIXES, key=len, reverse=True):
        if name.lower().endswith(suffix):
            return name[:-len(suffix)]
    return name


class Renderer:
    """Turns one row (a dict) into a request line for the job's provider."""

    def __init__(self, settings: Settings, stem: str):
        self.template = settings.template or ""
        self.system = settings.system
        self.model = settings.model
        self.max_tokens = settings.max_tokens
        self.id_field = settings.id_field
        self.stem = stem
        self.openai = settings.provider == "openai"

    def __call__(self, row: dict, row_number: int) -> Item:
        """The request line of the `row_number`-th row (from 1), or what is wrong with the row."""
        cid = self._custom_id(row, row_number)
        if cid is None:
            return f"missing id field {self.id_field!r}"
        fields = Fields(row)
        try:
            text = self.template.format_map(fields)
        except (ValueError, TypeError, AttributeError, IndexError, KeyError) as exc:
            return f"the template cannot render this row: {type(exc).__name__}: {exc}"
        if fields.missing:
            names = ", ".join(repr(n) for n in dict.fromkeys(fields.missing))
            return f"missing field{'s' if len(set(fields.missing)) > 1 else ''} {names} for the template"
        return encode(self._request(cid, text))

    def _custom_id(self, row: dict, row_number: int) -> str | None:
        if not self.id_field:
            return safe_id(self.stem, row_number)
        value = row.get(self.id_field)
        if value is None or value == "":
            return None
        return value if type(value) is str else orjson.dumps(value).decode()

    def _request(self, cid: str, text: str) -> dict:
        user = {"role": "user", "content": text}
        if self.openai:
            messages = [{"role": "system", "content": self.system}, user] if self.system else [user]
            return {"custom_id": cid, "method": "POST", "url": "/v1/chat/completions",
                    "body": {"model": self.model, "max_tokens": self.max_tokens, "messages": messages}}
        params: dict = {"model": self.model, "max_tokens": self.max_tokens}
        if self.system:
            params["system"] = self.system
        params["messages"] = [user]
        return {"custom_id": cid, "params": params}


class TemplateSource:
    """Rows of one file rendered through the template; same interface as `reader.JsonlSource`."""

    unit = "rows"

    def __init__(self, path: str, index: int, settings: Settings):
        self.path = path
        self.index = index
        self.csv = path.lower().endswith((".csv", ".csv.gz"))
        self.render = Renderer(settings, stem_of(path))

    def _open(self) -> Any:
        """Bytes for JSONL; text for CSV (UTF-8, a spreadsheet's BOM dropped, newlines left to csv)."""
        gz = self.path.lower().endswith(".gz")
        raw = gzip.open(self.path, "rb") if gz else open(self.path, "rb")  # noqa: SIM115
        return io.TextIOWrapper(raw, encoding="utf-8-sig", newline="") if self.csv else raw

    async def blocks(self, start_pos: int = 0, start_line: int = 1) -> AsyncIterator[Block]:
        """Blocks of items from position `start_pos` (its line number is read from the file itself)."""
        f = self._open()  # opened and closed on the loop: a cancelled thread hop would leak the file
        try:
            items = self._items(f)
            if start_pos:
                await asyncio.to_thread(skip, items, start_pos)
            while block := await asyncio.to_thread(self._block, items):
                yield block
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
            if len(lines) >= ROWS_PER_BLOCK or nbytes >= BLOCK_BYTES:
                break
        return Block(self.index, lines, first_line, first_pos) if lines else None

    def _items(self, f: Any) -> Iterator[Entry]:
        return self._csv_items(f) if self.csv else self._jsonl_items(f)

    def _csv_items(self, f: Any) -> Iterator[Entry]:
        reader = csv.reader(f)
        row_no = 0
        try:
            header = next(reader, None)
            if header is None:
                return
            base = reader.line_num + 1  # the line number of position 0
            while True:
                before = reader.line_num
                try:
                    row = next(reader, None)
                except csv.Error as exc:
                    row = f"unreadable CSV row: {exc}"
                if row is None:
                    return
                if type(row) is list:
                    row = self._csv_row(header, row)
                if row is not BLANK:
                    row_no += 1
                yield before + 1 - base, before + 1, row, row_no
                for extra in range(before + 2, reader.line_num + 1):  # the other lines of a multi-line row
                    yield extra - base, extra, BLANK, row_no
        except UnicodeDecodeError as exc:
            raise InputError(self.path, reader.line_num + 1,
                             f"not UTF-8 at or after this line ({exc.reason}); save the file as UTF-8") from None

    @staticmethod
    def _csv_row(header: list[str], row: list[str]) -> dict | str:
        """A row as a dict; a short row lacks its last fields (named if the template uses them)."""
        if not row:
            return BLANK
        if len(row) > len(header):
            return f"row has {len(row)} fields, the header has {len(header)} (a quote missing?)"
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


def skip(items: Iterator[Entry], n: int) -> None:
    """Read past the first `n` positions (parsed to keep CSV in step, not rendered)."""
    for _ in itertools.islice(items, n):
        pass


def make_sources(paths: list[str], settings: Settings) -> list[Source]:
    """The job's inputs: rows through --template, or JSONL request lines."""
    if settings.template:
        return list(template_sources(paths, settings))
    return [ObjectJsonlSource(p, i, max_line_bytes=settings.batch_bytes) if is_object_url(p)
            else JsonlSource(p, i, max_line_bytes=settings.batch_bytes) for i, p in enumerate(paths)]


def template_sources(paths: list[str], settings: Settings) -> list[TemplateSource]:
    """One source per rows file; UsageError when the options cannot make requests out of rows."""
    if not settings.template:
        raise UsageError("--template is required to read rows")
    if settings.max_tokens is None:
        raise UsageError("--max-tokens is required with --template (the answer length of each request)")
    if not settings.model:
        raise UsageError("--model (or CLAUDE_MODEL / OPENAI_MODEL) is required with --template")
    check_template(settings.template)
    for path in paths:
        if not path.lower().endswith(ROW_SUFFIXES):
            raise UsageError(f"{path}: rows for --template must be {', '.join(ROW_SUFFIXES)} files")
    return [TemplateSource(p, i, settings) for i, p in enumerate(paths)]
