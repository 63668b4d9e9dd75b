"""Every line is checked before it joins a batch; bad lines go to rejected.jsonl, never to the API.

`Validator.check` is on the hot path: a line of the provider's plain shape is read by its typed decoder
in one call (`Provider.plain_check`); any other, one orjson parse and a few dictionary looks. The
custom_id duplicate check keeps 8 bytes per request (an open-addressing table of 64-bit string
hashes, not a set of strings), so a million requests cost about 13 MiB, not a hundred.
"""

from __future__ import annotations

import contextlib
import os
import sys
from array import array
from collections.abc import Iterable
from itertools import islice
from typing import IO

import orjson

from batch_scheduler.core.durable import replace
from batch_scheduler.job.input.prefix import job_lane_of
from batch_scheduler.job.input.reader import LineTooLong
from batch_scheduler.providers.base import Provider

BLANK = "blank"
RESERVE_MAX = 4_000_000  # requests the duplicate check is sized for before it has seen them


class FingerprintSet:
    """A set of 64-bit fingerprints in about 12 bytes each (open addressing, load at most 0.7).

    The table is cut into 64 segments (by the top bits) that grow one at a time by 1.5x, so the
    table stays close to what it holds and growing never holds two copies of the whole table.
    """

    SEGMENTS = 64
    MAX_LOAD = 0.7

    def __init__(self, slots: int = 1024):
        self._segs = [array("q", bytes(8 * slots)) for _ in range(self.SEGMENTS)]
        self._limits = [int(slots * self.MAX_LOAD)] * self.SEGMENTS
        self._counts = [0] * self.SEGMENTS
        self._n = 0

    def __len__(self) -> int:
        return self._n

    def add(self, h: int) -> bool:
        """Add; False when it was there already."""
        return self.add_all((h,)) == 1

    def add_all(self, hashes: Iterable[int]) -> int:
        """Add `hashes` (fingerprints: `hash` of each custom_id) in order, up to the first already there (itself
        not added): how many were added. This loop runs once per input line."""
        segs, counts, limits = self._segs, self._counts, self._limits
        added = 0
        for h in hashes:
            h = h or 1
            k = (h >> 58) & 63
            slots = segs[k]
            size = len(slots)
            i = h % size
            while (v := slots[i]) != 0:
                if v == h:
                    self._n += added
                    return added
                i += 1
                if i == size:
                    i = 0
            slots[i] = h
            counts[k] += 1
            if counts[k] > limits[k]:
                self._grow(k)
            added += 1
        self._n += added
        return added

    def reserve(self, n: int) -> None:
        """Make room for about n fingerprints in all, now, so the table does not grow step by step."""
        want = int(n / self.SEGMENTS / self.MAX_LOAD * 1.1) + 1
        for k in range(self.SEGMENTS):
            if len(self._segs[k]) < want:
                self._grow(k, want)

    def _grow(self, k: int, size: int = 0) -> None:
        old = self._segs[k]
        size = max(size, len(old) * 3 // 2)
        slots = array("q", bytes(8 * size))
        for v in old:
            if v:
                i = v % size
                while slots[i] != 0:
                    i = (i + 1) % size
                slots[i] = v
        self._segs[k] = slots
        self._limits[k] = int(size * self.MAX_LOAD)


class Validator:
    """Checks one raw line: (custom_id, bytes to send, None) or (custom_id or None, None, error).

    A provider whose batches must keep requests apart (OpenAI: one model and one endpoint per batch file)
    has a `lane_of(obj)` (the `Provider` default is None), and a job that primes lanes requests by their
    cached prefix (`prefix.job_lane_of`); then `lanes` is True and, after each line `check` accepts, `lane`
    names the lane the batcher must put it in, None for a line of no lane (the empty lane: a request without
    a cache mark in a job whose provider has no lanes), which the cut takes on its fast path.
    """

    def __init__(self, provider: Provider, max_line_bytes: int):
        self._check_request = provider.check_request
        self._custom_id = provider.spec.custom_id_re
        self._custom_id_rule = provider.spec.custom_id_rule
        self._max_line = max_line_bytes
        self._seen = FingerprintSet()
        self._lane_of = job_lane_of(provider)  # the provider's lanes, and cached prefixes when the job primes
        self._id_fields = provider.id_fields
        self._id_field = provider.id_fields[0]
        self.lanes = self._lane_of is not None
        self.lane: str | None = None
        self.min_batch = provider.spec.min_batch_requests  # the fewest requests a batch may hold (the cut's floor)
        # a line of the provider's plain shape is read by its typed decoder (no lane: a provider with lanes has none)
        self._plain = provider.plain_check if provider.lane_of is None else None

    def expect(self, n: int) -> None:
        """About n requests are coming (an estimate from the input's size and its first lines): size the
        duplicate check once. At most RESERVE_MAX up front (~50 MB): an estimate from short first lines
        can be far too high, and past that the table grows as usual."""
        self._seen.reserve(min(n, RESERVE_MAX))

    def accept_plain(self, lines: list) -> list[str]:
        """The custom_ids of the longest run of `lines` (raw lines, from the first) that `check` would accept
        as they came on its fast path, now counted by the duplicate check, as `check` of each in turn would;
        the line after the run is for `check`. Empty when the provider has no fast check (or lanes)."""
        if self._plain is None:
            return []
        ids = self._plain(lines)
        n = len(ids)
        if n and max(map(len, islice(lines, n))) > self._max_line:
            n = next(i for i, raw in enumerate(lines) if len(raw) > self._max_line)
        fullmatch = self._custom_id.fullmatch
        if n and not all(map(fullmatch, islice(ids, n))):
            n = next(i for i, cid in enumerate(ids) if not fullmatch(cid))
        del ids[n:]
        if n:
            del ids[self._seen.add_all(map(hash, ids)):]
            self.lane = None
        return ids

    def check(self, raw) -> tuple[str | None, bytes | None, str | None]:
        if self._plain is not None and type(raw) is bytes and len(raw) <= self._max_line:
            ids = self._plain((raw,))  # the common line in one call; none: the full check below decides
            if ids and self._custom_id.fullmatch(ids[0]):
                if not self._seen.add(hash(ids[0])):
                    return ids[0], None, f"duplicate custom_id {ids[0]!r} (the first one is kept)"
                self.lane = None
                return ids[0], raw, None
        if type(raw) is not bytes:
            if isinstance(raw, LineTooLong):
                return None, None, f"line is {raw.size:,} bytes, larger than a batch may be ({self._max_line:,})"
            return None, None, str(raw)  # a row source already said what is wrong
        try:
            obj = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            return None, None, self._why_unparsable(raw, exc)
        if type(obj) is not dict:
            return None, None, f"not a JSON object (got {type(obj).__name__})"
        id_field = self._id_field  # the first of the id fields present names the request
        cid = obj[id_field] if id_field in obj else next((obj[f] for f in self._id_fields if f in obj), None)
        if cid is None:
            return None, None, f"{' or '.join(self._id_fields)} missing"
        if type(cid) is not str:
            return None, None, f"custom_id is not a string (got {type(cid).__name__})"
        if not self._custom_id.fullmatch(cid):
            return None, None, f"custom_id {cid[:80]!r} must be {self._custom_id_rule}"
        if len(raw) > self._max_line:
            return cid, None, f"line is {len(raw):,} bytes, larger than a batch may be ({self._max_line:,})"
        problem, out = self._check_request(obj, raw)
        if problem:
            return cid, None, problem
        if not self._seen.add(hash(cid)):
            return cid, None, f"duplicate custom_id {cid!r} (the first one is kept)"
        if self._lane_of is not None:
            self.lane = self._lane_of(obj) or None
        return cid, out, None

    @staticmethod
    def _why_unparsable(raw: bytes, exc: Exception) -> str:
        if not raw.strip():
            return BLANK
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as err:
            return f"bytes that are not UTF-8 at column {err.start + 1}"
        return f"malformed JSON: {exc}"


class Rejects:
    """Writes rejected lines to DIR/rejected.jsonl and remembers the count and the first few.

    A run writes the list afresh to `rejected.jsonl.partial`, which replaces rejected.jsonl only once the
    run has read its whole input (`close(complete=True)`): an interrupted or refused run leaves the list of
    the last run that read everything, and then `count` is what that list holds.
    """

    SHOW = 5

    def __init__(self, path: str | None, files: list[str]):
        self._files = files
        self._f: IO[bytes] | None = None
        self._path = path
        self.kept = 0  # lines of the rejected.jsonl this run found (what stands if it does not read everything)
        if path:
            self.kept = _count_lines(path)
            fd = os.open(path + PARTIAL, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            self._f = os.fdopen(fd, "wb", buffering=1 << 16)
        self.count = 0
        self.first: list[str] = []

    def add(self, file_index: int | None, line: int | None, custom_id: str | None, error: str,
            extra: dict | None = None) -> None:
        self.count += 1
        record: dict = {"file": self._files[file_index] if file_index is not None else None, "line": line}
        if custom_id is not None:
            record["custom_id"] = custom_id
        record["error"] = error
        if extra:
            record.update(extra)
        if self._f:
            try:
                self._f.write(orjson.dumps(record) + b"\n")
            except OSError as err:  # a full disk: say which file
                raise OSError(err.errno, err.strerror, self._path) from None
        if len(self.first) < self.SHOW:
            where = f"{record['file']}:{line}" if line is not None else f"custom_id {custom_id}"
            self.first.append(f"{where}: {error}")

    def flush(self) -> None:
        if self._f:
            self._f.flush()
            os.fsync(self._f.fileno())

    def close(self, *, complete: bool = True) -> None:
        """The list done: it becomes rejected.jsonl if it is `complete`, else it is dropped (the old one stays)."""
        if not self._f:
            return
        f, self._f = self._f, None
        assert self._path is not None
        partial = self._path + PARTIAL
        try:
            try:
                if complete:
                    f.flush()
                    os.fsync(f.fileno())
            finally:
                try:
                    f.close()
                except OSError:
                    if complete:
                        raise
            if complete:
                replace(partial, self._path)
        except OSError as err:  # a full disk: the list of the last complete read stays
            complete = False
            raise OSError(err.errno, err.strerror, self._path) from None
        finally:
            if not complete:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(partial)
                self.count = self.kept

    def report(self, stream: IO[str] = sys.stderr) -> None:
        if not self.count:
            return
        print(f"{self.count:,} line(s) rejected (see rejected.jsonl); first ones:", file=stream)
        for text in self.first:
            print(f"  {text}", file=stream)


PARTIAL = ".partial"  # rejected.jsonl.partial: the list a run is writing


def _count_lines(path: str) -> int:
    try:
        with open(path, "rb") as f:
            return sum(block.count(b"\n") for block in iter(lambda: f.read(1 << 20), b""))
    except FileNotFoundError:
        return 0
