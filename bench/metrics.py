"""What a finished run left behind, turned into numbers.

- per-batch delay from "ended at the provider" (the batch object's `ended_at`, read back from the
  simulator with list calls after the run) to "results durable on disk" (the scheduler's ledger,
  `chunks.collected_at`, opened read-only; for a baseline, the time it wrote the batch's results);
- the raw time to download one batch's results (urllib, bytes read and dropped), the yardstick for
  that delay;
- exactly-once: every custom_id of the input exactly once across the result files.
"""

from __future__ import annotations

import json
import math
import sqlite3
import time
import urllib.request
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import datetime

import orjson

PATH = "/v1/messages/batches"
LIST_LIMIT = 1000
ID_PREFIX = b"article-"  # the ids bench.inputs generates: article-0000000 ... article-(N-1)


def percentile(values: list[float], q: float) -> float | None:
    """Linear-interpolated q-th percentile (0..100); None for no values."""
    if not values:
        return None
    xs = sorted(values)
    k = (len(xs) - 1) * q / 100
    lo, hi = math.floor(k), math.ceil(k)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def spread(values: list[float]) -> dict[str, float | None]:
    return {"n": len(values), "p50": percentile(values, 50), "p95": percentile(values, 95),
            "p99": percentile(values, 99), "max": max(values) if values else None}


def ledger_batches(out_dir: str) -> dict[str, float]:
    """batch id -> collected_at (epoch s) for every collected batch in DIR/ledger.db (read-only)."""
    db = sqlite3.connect(f"file:{out_dir}/ledger.db?mode=ro", uri=True)
    try:
        rows = db.execute("SELECT batch_id, collected_at FROM chunks "
                          "WHERE batch_id IS NOT NULL AND collected_at IS NOT NULL").fetchall()
    finally:
        db.close()
    return {b: float(t) for b, t in rows}


def parse_rfc3339(s: str | None) -> float | None:
    if not s:
        return None
    return datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()


def _get(url: str, key: str, timeout_s: float = 30) -> bytes:
    req = urllib.request.Request(url, headers={"x-api-key": key, "anthropic-version": "2023-06-01"})
    with urllib.request.urlopen(req, timeout=timeout_s) as resp:
        return resp.read()


def provider_ended_at(base_url: str, key: str, batch_ids: Iterable[str]) -> dict[str, float]:
    """batch id -> the provider's ended_at, paging through list (newest first) until all are seen."""
    wanted = set(batch_ids)
    found: dict[str, float] = {}
    after: str | None = None
    while wanted - found.keys():
        url = f"{base_url}{PATH}?limit={LIST_LIMIT}" + (f"&after_id={after}" if after else "")
        page = json.loads(_get(url, key))
        for b in page["data"]:
            if b["id"] in wanted and (t := parse_rfc3339(b.get("ended_at"))) is not None:
                found[b["id"]] = t
        if not page.get("has_more") or not page["data"]:
            break
        after = page["last_id"]
    for batch_id in wanted - found.keys():  # not in the list (should not happen): ask one by one
        t = parse_rfc3339(json.loads(_get(f"{base_url}{PATH}/{batch_id}", key)).get("ended_at"))
        if t is not None:
            found[batch_id] = t
    return found


def delays_s(ended: dict[str, float], durable: dict[str, float]) -> list[float]:
    return [durable[b] - ended[b] for b in durable if b in ended]


def download_s(base_url: str, key: str, batch_ids: list[str], sample: int = 5) -> float | None:
    """Median seconds to fetch one batch's results whole (a few batches, spread over the run)."""
    if not batch_ids:
        return None
    step = max(1, len(batch_ids) // sample)
    times = []
    for batch_id in batch_ids[::step][:sample]:
        t0 = time.perf_counter()
        _get(f"{base_url}{PATH}/{batch_id}/results", key, timeout_s=120)
        times.append(time.perf_counter() - t0)
    return percentile(times, 50)


@dataclass
class Exactness:
    expected: int
    lines: int
    unique: int
    duplicates: int  # ids seen more than once
    missing: int
    foreign: int  # lines whose id is not one of the input's

    @property
    def exact(self) -> bool:
        return self.lines == self.expected == self.unique and not (self.duplicates or self.missing or self.foreign)

    def as_dict(self) -> dict:
        return {**asdict(self), "exact": self.exact}


def check_exact(paths: Iterable[str], expected: int) -> Exactness:
    """Every custom_id article-0 .. article-(expected-1) exactly once across the files."""
    seen = bytearray(expected)
    lines = foreign = 0
    head = b'{"custom_id":"'
    skip = len(head)
    plen = len(ID_PREFIX)
    for path in paths:
        with open(path, "rb") as f:
            for line in f:
                if line == b"\n":
                    continue
                lines += 1
                if line.startswith(head):
                    cid = line[skip:line.index(b'"', skip)]
                else:
                    cid = orjson.loads(line)["custom_id"].encode()
                try:
                    idx = int(cid[plen:]) if cid.startswith(ID_PREFIX) else -1
                except ValueError:
                    idx = -1
                if 0 <= idx < expected:
                    if seen[idx] < 255:
                        seen[idx] += 1
                else:
                    foreign += 1
    missing = seen.count(0)
    once = seen.count(1)
    return Exactness(expected, lines, expected - missing, expected - missing - once, missing, foreign)
