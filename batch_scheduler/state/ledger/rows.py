"""The ledger's schema and the rows it hands out: chunk kinds and states, retry states, a chunk row."""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass
from typing import NamedTuple

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS chunks (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,                 -- a ChunkKind: 'input' or 'retry'
    root_seq INTEGER,                   -- input chunk number (input kind)
    skip INTEGER NOT NULL DEFAULT 0,    -- this chunk is lines [skip, skip+take) of the root chunk
    take INTEGER NOT NULL,
    start_file INTEGER, start_pos INTEGER, start_line INTEGER, end_file INTEGER, end_pos INTEGER,
    nbytes INTEGER NOT NULL DEFAULT 0,
    state TEXT NOT NULL,
    batch_id TEXT UNIQUE,
    adopted INTEGER NOT NULL DEFAULT 0,
    attempt INTEGER NOT NULL DEFAULT 1, -- request attempt (retry chunks: attempt of its requests)
    intent_at REAL, submitted_at REAL, ended_at REAL, collected_at REAL,
    est_cost REAL NOT NULL DEFAULT 0,
    note TEXT,
    skipped TEXT,                       -- input kind: JSON [[file, line], ...] of rejected lines inside the span
    digest TEXT,                        -- input kind: sha256 of the root chunk's request lines, as cut
    units INTEGER,                      -- what the batch weighs in the provider's queue (requests or tokens)
    queue_key TEXT,                     -- which of the provider's queues: 'requests', or the model
    create_at REAL                      -- when the create call of its latest intent was started (NULL: never)
);
CREATE INDEX IF NOT EXISTS chunks_root ON chunks(root_seq);
CREATE INDEX IF NOT EXISTS chunks_state ON chunks(state);
CREATE TABLE IF NOT EXISTS retries (
    custom_id TEXT PRIMARY KEY,
    request BLOB NOT NULL,
    attempts INTEGER NOT NULL,          -- attempts made so far
    chunk_id INTEGER,                   -- retry chunk it is assigned to, NULL while pending
    state TEXT NOT NULL,                -- a RetryState: 'pending', 'assigned', 'cancelled', 'failed', 'done'
    last_line BLOB,                     -- its last result line; NULL when the results left it out
    not_before REAL NOT NULL DEFAULT 0  -- epoch seconds: a pending request is not sent again earlier
);
CREATE INDEX IF NOT EXISTS retries_state ON retries(state, chunk_id);
CREATE TABLE IF NOT EXISTS api_rejected (
    custom_id TEXT PRIMARY KEY, root_seq INTEGER, message TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS chunk_ids (    -- the custom_ids an input chunk carries (JSON list), for completeness
    chunk_id INTEGER PRIMARY KEY, ids BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS shards (idx INTEGER PRIMARY KEY, offset INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value REAL NOT NULL);
CREATE TABLE IF NOT EXISTS result_objects (  -- results as write-once objects (--out s3://...)
    key TEXT PRIMARY KEY, chunk_id INTEGER NOT NULL, shard INTEGER NOT NULL, nbytes INTEGER NOT NULL,
    lines INTEGER NOT NULL
);
"""


class ChunkKind(enum.StrEnum):
    INPUT = "input"  # a span of the input files, read again from there when it is sent again
    RETRY = "retry"  # requests parked in `retries` for another attempt, sent again from the ledger


class ChunkState(enum.StrEnum):
    SUBMITTING = "submitting"  # intent recorded; outcome of create not known yet
    PLANNED = "planned"  # known not to exist at the provider (create refused); to send again
    SUBMITTED = "submitted"  # batch id known
    COLLECTED = "collected"  # results durable in the shards
    SPLIT = "split"  # replaced by two smaller chunks
    DROPPED = "dropped"  # nothing left to send (every request refused)
    FAILED = "failed"  # the provider failed the batch as a whole; requests parked for retry


class RetryState(enum.StrEnum):
    """A request parked in `retries`. Earlier versions stored CANCELLED as `canceled` (the result type's
    spelling): opening such a ledger for writing migrates it, and `retry_counts` reads either."""

    PENDING = "pending"  # waits for a retry chunk
    ASSIGNED = "assigned"  # in a retry chunk (chunk_id)
    CANCELLED = "cancelled"  # its batch was cancelled; waits for `run --retry-cancelled`
    FAILED = "failed"  # out of attempts with no answer (batches failed as a whole, or left out of the results);
    #                    the next run tries once more
    DONE = "done"  # its final line is in the shards, or the API refused it


_OLD_CANCELLED = "canceled"  # RetryState.CANCELLED as earlier versions stored it


class RetryWait(NamedTuple):
    """How long a parked request waits before it is sent again: first_s after its first attempt,
    doubling with each further attempt, never more than max_s."""

    first_s: float = 0.0
    max_s: float = 0.0

    def after(self, attempts: int) -> float:
        return min(self.max_s, self.first_s * 2 ** max(0, attempts - 1))


@dataclass
class ChunkRow:
    id: int
    kind: ChunkKind
    root_seq: int | None
    skip: int
    take: int
    start_file: int | None
    start_pos: int | None
    start_line: int | None
    end_file: int | None
    end_pos: int | None
    nbytes: int
    state: ChunkState
    batch_id: str | None
    adopted: int
    attempt: int
    intent_at: float | None
    submitted_at: float | None
    ended_at: float | None
    collected_at: float | None
    est_cost: float
    note: str | None
    skipped: str | None = None  # JSON [[file, line], ...]: lines inside the span that the validator refused
    digest: str | None = None  # input chunks: batcher.chunk_digest of the root chunk's request lines when cut
    #                            (XXH3-128, named; sha256 hex in ledgers of earlier versions; None: older still)
    units: int | None = None  # what its batch weighs in the provider's queue (see job.queue_budget)
    queue_key: str | None = None
    create_at: float | None = None  # the create call of its latest intent was started then; None: not (yet)

    def __post_init__(self) -> None:
        self.kind = ChunkKind(self.kind)
        self.state = ChunkState(self.state)

    def skipped_lines(self) -> set[tuple[int, int]]:
        return {(f, n) for f, n in json.loads(self.skipped)} if self.skipped else set()


ADDED_COLUMNS = {"skipped": "TEXT", "digest": "TEXT", "units": "INTEGER", "queue_key": "TEXT",
                 "create_at": "REAL"}  # chunks columns later versions added: migrated on open
# What a ledger made before `create_at` knew: a chunk left `submitting` may have been at its create call,
# so it is marked as if it were (looked for before it is sent again, as those versions did).
MARK_OLD_SUBMITTING = "UPDATE chunks SET create_at = intent_at WHERE state = 'submitting' AND create_at IS NULL"
