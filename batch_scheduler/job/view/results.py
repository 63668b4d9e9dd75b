"""A job's results read back: as they lie in the shards, or one per input request in input order.

    JobView.open(DIR)    the job as its ledger describes it (read-only, safe while a run goes on):
                         settings, inputs, durable shard lengths, requests the API refused, attempts
    shard_lines(view)    every durable result line, shard by shard (what `--order shard` reads)
    input_entries(view)  every input line in input order, accepted or rejected exactly as the run
                         decided (the job's own sources, provider checks and validator)
    ResultIndex(view)    custom_id -> its result line, for input order without holding the results
    read_results(DIR)    the library's iterator of result lines (dicts), in either order

Only what the ledger records as durable is read (a shard may be longer while a run writes to it).
Memory stays bounded by the number of requests times a few words, never by their size: the index
keeps 24 bytes a result (an `IdTable` of 64-bit hashes -> shard, offset, length); each line is read
again with `pread` when its turn comes, and its custom_id confirmed, so two ids sharing a hash cannot
be mixed up. Reading in input order needs the job's inputs as they were (checked against the ledger).
"""

from __future__ import annotations

import os
import re
from array import array
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson

from batch_scheduler.core.errors import UsageError
from batch_scheduler.core.lines import split_after
from batch_scheduler.core.options import BY_NAME, JOB_OPTIONS
from batch_scheduler.core.settings import Settings
from batch_scheduler.job.input.batcher import BODY_WRAPPER_BYTES
from batch_scheduler.job.input.reader import BLOCK_BYTES, JsonlSource, Source
from batch_scheduler.job.input.sources import TemplateSource, make_sources
from batch_scheduler.job.input.validate import BLANK, Validator
from batch_scheduler.job.money.pricing import PriceTable
from batch_scheduler.providers import make_provider
from batch_scheduler.providers.base import Provider
from batch_scheduler.state.identity import fingerprint
from batch_scheduler.state.jobdir import finished
from batch_scheduler.state.ledger import open_ledger
from batch_scheduler.state.shards import shard_path

ORDERS = ("input", "shard")
_OFFSET_BITS = 40  # a location is shard << 40 | offset: shards up to 1 TB each
_CID = re.compile(rb'^\{(?:"id":"[^"\\]*",)?"custom_id":"([^"\\]*)"')  # the two providers' line heads


class IdTable:
    """custom_id -> `width` integers, in (8 + 8 x width) / 0.7 bytes an id: open addressing over the ids'
    hashes (Python's, stable within the process). Ids that share a hash are all kept; `find` yields each
    and the caller confirms the id from what the values point at. Sized once (`expect`), it never grows
    while full of millions of ids; past the estimate it doubles."""

    MAX_LOAD = 0.7

    def __init__(self, width: int, expect: int = 0):
        self.width = width
        self._n = 0
        self._alloc(max(1024, int(expect / self.MAX_LOAD) + 1))

    def _alloc(self, slots: int) -> None:
        self._keys = array("q", bytes(8 * slots))
        self._vals = array("q", bytes(8 * slots * self.width))

    def __len__(self) -> int:
        return self._n

    def add(self, cid: str, *values: int) -> None:
        self._put(hash(cid) or 1, values)
        self._n += 1
        if self._n > len(self._keys) * self.MAX_LOAD:
            self._grow()

    def _put(self, h: int, values: tuple[int, ...] | array) -> None:
        keys, size, w = self._keys, len(self._keys), self.width
        i = h % size
        while keys[i] != 0:
            i = i + 1 if i + 1 < size else 0
        keys[i] = h
        self._vals[i * w:(i + 1) * w] = array("q", values)

    def find(self, cid: str) -> Iterator[tuple[int, ...]]:
        h = hash(cid) or 1
        keys, size, w, vals = self._keys, len(self._keys), self.width, self._vals
        i = h % size
        while (k := keys[i]) != 0:
            if k == h:
                yield tuple(vals[i * w:(i + 1) * w])
            i = i + 1 if i + 1 < size else 0

    def _grow(self) -> None:
        keys, vals, w = self._keys, self._vals, self.width
        self._alloc(len(keys) * 2)
        for i, h in enumerate(keys):
            if h:
                self._put(h, vals[i * w:(i + 1) * w])


def settings_of(meta: dict[str, Any]) -> Settings:
    """The settings that decided the job's requests: its batch-shaping options as the ledger holds them
    (a template's text, not its file), and the remembered options that tell how a row is checked."""
    flags = meta.get("flags", {})
    values = {BY_NAME[k].attr: v for k, v in meta.get("shaping", {}).items() if k in BY_NAME}
    for name in ("anthropic_version", "prices"):
        if isinstance(flags.get(name), str):
            values[BY_NAME[name].attr] = flags[name]
    known = {o.attr for o in JOB_OPTIONS}
    return Settings(**{k: v for k, v in values.items() if k in known})


@dataclass
class JobView:
    out_dir: str
    settings: Settings
    recorded_inputs: list[dict]  # path, size, edge hash of each input, as the first run found them
    offsets: list[int]  # durable bytes of each shard
    refused: dict[str, str]  # custom_id -> what the API said
    attempts: IdTable  # custom_id -> attempts before the final one (requests sent again)
    finished: int  # final lines in the shards, by the ledger's count
    accepted: int | None  # requests the job has (None: no run read all of its input yet)
    prices: PriceTable
    provider: Provider = field(init=False)

    def __post_init__(self) -> None:
        self.provider = make_provider(self.settings, http=None)  # type: ignore[arg-type]  # it sends nothing here

    @classmethod
    def open(cls, out_dir: str) -> JobView:
        path = os.path.join(out_dir, "ledger.db")
        if not os.path.exists(path):
            raise UsageError(f"{out_dir}: no job here (no ledger.db)")
        ledger = open_ledger(path, readonly=True)
        try:
            meta = ledger.read_meta()
            settings = settings_of(meta)
            counters = ledger.counters()
            offsets = ledger.read_shard_offsets(settings.shards)
            refused = ledger.read_api_rejected()
            attempts = IdTable(1, int(counters.get("retried", 0)))
            ledger.each_retried_final(lambda cid, n: attempts.add(cid, n))
        finally:
            ledger.close()
        try:
            prices = PriceTable.load(settings.prices_file)
        except UsageError as err:
            raise UsageError(f"{err}: the job's price table, which the cost of each answer needs (a relative path "
                             f"is read from the current directory: export from where the job ran)") from None
        return cls(out_dir, settings, meta.get("inputs", []), offsets, refused, attempts, finished(counters),
                   meta.get("accepted_total"), prices)

    def attempts_of(self, cid: str) -> int:
        """Attempts a request with a final line took (1 unless it was sent again)."""
        if not len(self.attempts):
            return 1
        return 1 + next(iter(self.attempts.find(cid)), (0,))[0]

    def sources(self) -> list[Source]:
        """The job's inputs as the run read them; UsageError when one is gone or changed since."""
        for p in self.recorded_inputs:
            if not os.path.isfile(p["path"]):
                raise UsageError(f"{p['path']}: the job's input is gone; an export in input order, with the rows' "
                                 f"columns or the rejected lines reads it again (`--format jsonl --order shard` "
                                 f"needs only the results)")
            if fingerprint(p["path"]) != p:
                raise UsageError(f"{p['path']} changed since the job read it (size or content differs): its rows "
                                 f"would not match the results")
        return make_sources([p["path"] for p in self.recorded_inputs], self.settings)


# -- the results as they lie ---------------------------------------------------------------------

def shard_lines(view: JobView) -> Iterator[tuple[int, int, bytes]]:
    """(shard, offset, line) of every durable result line, shard by shard, each in the order written."""
    for idx, limit in enumerate(view.offsets):
        if not limit:
            continue
        with open(shard_path(view.out_dir, idx), "rb") as f:
            pos, tail = 0, b""
            while pos + len(tail) < limit:
                data = f.read(min(BLOCK_BYTES, limit - pos - len(tail)))
                if not data:
                    raise UsageError(f"{shard_path(view.out_dir, idx)} is shorter than the ledger records; "
                                     f"results were removed by hand")
                lines, tail = split_after(tail, data)
                for line in lines:
                    yield idx, pos, line
                    pos += len(line) + 1


def custom_id_of(line: bytes) -> str:
    """The custom_id of a result line: read off its head when it has the usual form, else parsed."""
    m = _CID.match(line)
    if m is not None:
        return m.group(1).decode()
    return orjson.loads(line)["custom_id"]


class ResultIndex:
    """custom_id -> its durable result line, read again from its shard on demand."""

    def __init__(self, view: JobView):
        self._table = table = IdTable(2, view.finished)
        for idx, pos, line in shard_lines(view):
            table.add(custom_id_of(line), idx << _OFFSET_BITS | pos, len(line))
        self._fds = [os.open(shard_path(view.out_dir, i), os.O_RDONLY) if view.offsets[i] else -1
                     for i in range(len(view.offsets))]

    def __len__(self) -> int:
        return len(self._table)

    def get(self, cid: str) -> tuple[bytes, dict] | None:
        """(line, parsed line) of `cid`'s result, or None when it has none yet."""
        for loc, length in self._table.find(cid):
            line = os.pread(self._fds[loc >> _OFFSET_BITS], length, loc & ((1 << _OFFSET_BITS) - 1))
            doc = orjson.loads(line)
            if doc.get("custom_id") == cid:
                return line, doc
        return None

    def close(self) -> None:
        for fd in self._fds:
            if fd >= 0:
                os.close(fd)
        self._fds = []

    def __enter__(self) -> ResultIndex:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- the input, in order ----------------------------------------------------------------------------

@dataclass(slots=True)
class Entry:
    """One input request: its row (rows jobs), custom_id, and why it was rejected (None: accepted)."""

    file_index: int
    line: int
    row: dict | None
    cid: str | None
    error: str | None


def input_entries(view: JobView, sources: list[Source] | None = None) -> Iterator[Entry]:
    """Every request line of the input, in order, through the job's own checks (blank lines skipped).
    The duplicate check is the run's: the first of two equal custom_ids is the accepted one."""
    validator = Validator(view.provider, view.settings.batch_bytes - BODY_WRAPPER_BYTES)
    check = validator.check
    for src in sources if sources is not None else view.sources():
        fi = src.index
        if isinstance(src, TemplateSource):
            for line_no, row, item in src.entries():
                cid, _, err = check(item)
                if err is not BLANK:
                    yield Entry(fi, line_no, row, cid, err)
        else:
            assert isinstance(src, JsonlSource)
            for block in src.sync_blocks():
                for line_no, raw in enumerate(block.lines, block.first_line):
                    cid, _, err = check(raw)
                    if err is not BLANK:
                        yield Entry(fi, line_no, None, cid, err)


def in_input_order(view: JobView, index: ResultIndex, sources: list[Source] | None = None
                   ) -> Iterator[tuple[Entry, tuple[bytes, dict] | None]]:
    """Each input request with its result (None: rejected, or not final yet), in input order."""
    for entry in input_entries(view, sources):
        yield entry, (index.get(entry.cid) if entry.error is None and entry.cid is not None else None)


# -- the library's reader ---------------------------------------------------------------------------

def read_results(out_dir: str | os.PathLike, order: str = "input", *, model: Any = None) -> Iterator[dict]:
    """Every final result line of the job in DIR, parsed: in input order (default), or as the shards hold
    them (`order="shard"`: fastest, reads nothing but the shards). Requests without a result line
    (rejected, or not final yet) are left out. With `model=` (a Pydantic model class), each line's
    `"parsed"` is its answer as a model instance (None: no answer, or one that does not validate)."""
    if model is not None:
        from batch_scheduler.job.view.structured import instance
        for doc in read_results(out_dir, order):
            doc["parsed"] = instance(doc, model)
            yield doc
        return
    if order not in ORDERS:
        raise ValueError(f"order must be one of {', '.join(ORDERS)}, not {order!r}")
    view = JobView.open(os.fspath(out_dir))
    if order == "shard":
        for _, _, line in shard_lines(view):
            yield orjson.loads(line)
        return
    with ResultIndex(view) as index:
        for _, found in in_input_order(view, index):
            if found is not None:
                yield found[1]
