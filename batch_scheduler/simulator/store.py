"""Batches the simulator holds: compact per-request state, outcomes drawn at create, a timeline.

A batch keeps parallel lists (custom_id, model, max_tokens, input tokens) and one outcome byte per
request, never the request bodies; cache tokens and the requests left out of the results are sparse.
Outcomes are drawn once when the batch is created, so every download of a batch returns the same
lines. Request `i` counts as processed once `created + (i + 1) / n * duration` has passed; cancel
turns the unprocessed rest into CANCELED. A batch's duration does not grow with its size unless
`processing_per_request_s` says so: `processing_s` x (1 ± `processing_jitter`), drawn at create.
"""

from __future__ import annotations

import enum
import gc
import itertools
import random
import secrets
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any


class Outcome(enum.IntEnum):
    SUCCEEDED = 0
    INVALID = 1  # errored, invalid_request_error: permanent
    API_ERROR = 2  # errored, transient
    OVERLOADED = 3  # errored, transient
    EXPIRED = 4
    CANCELED = 5
    REQUEST_TIMEOUT = 6  # OpenAI: error-file line `request_timeout` (transient)


DAY_S = 24 * 3600.0
_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZabcdefghijkmnopqrstuvwxyz"
_serial = itertools.count(1)


def new_id(prefix: str, length: int = 24) -> str:
    """`prefix` + a unique token; a serial in front keeps ids of one process distinct and sortable."""
    token = "".join(secrets.choice(_ALPHABET) for _ in range(length - 8))
    return f"{prefix}{next(_serial):08d}{token}"


@contextmanager
def no_gc() -> Iterator[None]:
    """Pause the cyclic GC while a big body is parsed: its many new dicts would trigger full
    collections (3x the parse time on a 100,000-request create). No await may happen inside."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def rfc3339(epoch_s: float | None) -> str | None:
    if epoch_s is None:
        return None
    return datetime.fromtimestamp(epoch_s, UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def output_tokens(custom_id: str, max_tokens: int) -> int:
    return min(max_tokens, 16 + zlib.crc32(custom_id.encode()) % 64)


@dataclass(eq=False, slots=True)
class Batch:
    id: str
    kind: str  # "anthropic" | "openai" | "inline"
    created_wall: float  # epoch seconds
    created_at: float  # simulator clock
    ends_at: float  # simulator clock
    custom_ids: list[str]
    models: list[str]
    max_tokens: list[int]
    in_tokens: list[int]
    outcomes: bytearray
    out_tokens: list[int] = field(default_factory=list)  # output_tokens of each request, drawn once at create
    invalid: dict[int, str] = field(default_factory=dict)  # index -> why, for content problems
    missing: frozenset[int] = frozenset()  # requests left out of every results download
    cache: dict[int, tuple[int, int, int]] = field(default_factory=dict)  # index -> (5m, 1h, read) tokens
    cancel_at: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # per provider (OpenAI: endpoint, files, ...)

    @property
    def n(self) -> int:
        return len(self.custom_ids)

    def wall(self, at: float) -> float:
        """Clock time `at` as epoch seconds."""
        return self.created_wall + (at - self.created_at)

    def ended(self, now: float) -> bool:
        return now >= self.ends_at

    def processed(self, now: float) -> int:
        """How many requests are done at clock time `now`."""
        if now >= self.ends_at:
            return self.n
        duration = self.ends_at - self.created_at
        if self.cancel_at is not None:
            return self.extra["processed_at_cancel"]
        return min(self.n, int(self.n * (now - self.created_at) / duration)) if duration > 0 else self.n

    def cancel(self, now: float, cancel_s: float) -> bool:
        """Mark everything not processed by `now` CANCELED; the batch ends `cancel_s` later.

        False when there was nothing to cancel (already canceling or ended).
        """
        if self.cancel_at is not None or self.ended(now):
            return False
        done = self.processed(now)
        self.extra["processed_at_cancel"] = done
        self.outcomes[done:] = bytes([Outcome.CANCELED]) * (self.n - done)
        self.cancel_at = now
        self.ends_at = min(self.ends_at, now + cancel_s)
        return True

    def counts(self) -> dict[Outcome, int]:
        data = bytes(self.outcomes)
        return {o: data.count(o) for o in Outcome}


def draw_outcome(rng: random.Random, invalid_rate: float, errored_rate: float, expired_rate: float,
                 timeout_rate: float = 0.0) -> Outcome:
    r = rng.random()
    if r < invalid_rate:
        return Outcome.INVALID
    r -= invalid_rate
    if r < errored_rate:
        return Outcome.API_ERROR if r < errored_rate / 2 else Outcome.OVERLOADED
    r -= errored_rate
    if r < expired_rate:
        return Outcome.EXPIRED
    r -= expired_rate
    if r < timeout_rate:
        return Outcome.REQUEST_TIMEOUT
    return Outcome.SUCCEEDED


def draw_outcomes(rng: random.Random, n: int, invalid: dict[int, str], config: Any,
                  timeouts: bool = False) -> bytearray:
    """One outcome per request: content problems first, then the configured rates (`timeouts`: the
    provider has `request_timeout` lines, i.e. OpenAI)."""
    outcomes = bytearray(n)
    rates = (config.invalid_rate, config.errored_rate, config.expired_rate,
             config.request_timeout_rate if timeouts else 0.0)
    if any(rates):
        for i in range(n):
            outcomes[i] = draw_outcome(rng, *rates)
    for i in invalid:
        outcomes[i] = Outcome.INVALID
    return outcomes


def draw_missing(rng: random.Random, n: int, rate: float) -> frozenset[int]:
    """The requests a batch's results will leave out (each with probability `rate`)."""
    if not rate or not n:
        return frozenset()
    return frozenset(i for i in range(n) if rng.random() < rate)


def draw_duration(rng: random.Random, config: Any, n: int) -> float:
    """Seconds from create to end: processing_s x (1 ± jitter), plus the per-request part."""
    base = config.processing_s
    if config.processing_jitter and base:
        base *= 1 + config.processing_jitter * (2 * rng.random() - 1)
    return max(0.0, base) + config.processing_per_request_s * n


class Store:
    """Every batch and file the simulator holds, in creation order."""

    def __init__(self) -> None:
        self.batches: dict[str, Batch] = {}
        self.files: dict[str, Any] = {}

    def add(self, batch: Batch) -> None:
        self.batches[batch.id] = batch

    def get(self, batch_id: str, kind: str) -> Batch | None:
        batch = self.batches.get(batch_id)
        return batch if batch is not None and batch.kind == kind else None

    def queued(self, now: float, kinds: tuple[str, ...] = ("anthropic", "inline")) -> int:
        """Requests still processing, across all batches of those kinds."""
        return sum(b.n for b in self.batches.values() if b.kind in kinds and not b.ended(now))

    def enqueued_tokens(self, now: float, model: str, kind: str = "openai") -> int:
        """OpenAI-style APIs: input tokens of the batches of `model` not yet ended (failed batches hold none)."""
        return sum(b.extra["enqueued_tokens"] for b in self.batches.values()
                   if b.kind == kind and not b.ended(now) and b.extra.get("model") == model)

    def page(self, kind: str, limit: int, after: str | None = None,
             before: str | None = None) -> tuple[list[Batch], bool] | None:
        """Newest first: (batches, has_more), or None when the cursor is unknown."""
        ids = [b.id for b in reversed(self.batches.values()) if b.kind == kind]
        if after is not None:
            if after not in ids:
                return None
            start = ids.index(after) + 1
            chunk = ids[start:start + limit]
            more = start + limit < len(ids)
        elif before is not None:
            if before not in ids:
                return None
            stop = ids.index(before)
            start = max(0, stop - limit)
            chunk = ids[start:stop]
            more = start > 0
        else:
            chunk = ids[:limit]
            more = limit < len(ids)
        return [self.batches[i] for i in chunk], more
