"""The ledger: an embedded SQLite database (WAL) at DIR/ledger.db, the truth about a job.

Write-ahead order, which every caller keeps:
  1. `record_intent` before a create call is sent (state `submitting`, with the time);
  2. `record_submitted` the moment create returns a batch id;
  3. shard lines are flushed and fsync'd first, then `record_collected` marks the batch collected,
     moves the shard offsets forward and adds the counts, in one transaction.
A crash between 1 and 2 leaves `submitting`: the next run looks for the batch before sending again.
A crash between 3's two halves leaves lines past the recorded offsets: the next run truncates them.

Per-request rows exist only for the few requests that need another attempt (`retries`) or were
refused by the API (`api_rejected`). Every method is one transaction, run on the ledger's own
thread and shielded from cancellation, so a cancelled task cannot tear a state change.
"""

from __future__ import annotations

import asyncio
import enum
import json
import os
import sqlite3
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")

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
    units INTEGER,                      -- what the batch weighs in the provider's queue (requests or tokens)
    queue_key TEXT                      -- which of the provider's queues: 'requests', or the model
);
CREATE INDEX IF NOT EXISTS chunks_root ON chunks(root_seq);
CREATE INDEX IF NOT EXISTS chunks_state ON chunks(state);
CREATE TABLE IF NOT EXISTS retries (
    custom_id TEXT PRIMARY KEY,
    request BLOB NOT NULL,
    attempts INTEGER NOT NULL,          -- attempts made so far
    chunk_id INTEGER,                   -- retry chunk it is assigned to, NULL while pending
    state TEXT NOT NULL,                -- a RetryState: 'pending', 'assigned', 'cancelled', 'failed', 'done'
    last_line BLOB
);
CREATE INDEX IF NOT EXISTS retries_state ON retries(state, chunk_id);
CREATE TABLE IF NOT EXISTS api_rejected (
    custom_id TEXT PRIMARY KEY, root_seq INTEGER, message TEXT NOT NULL
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
    FAILED = "failed"  # out of attempts in batches the provider failed as a whole; the next run tries once more
    DONE = "done"  # its final line is in the shards, or the API refused it


_OLD_CANCELLED = "canceled"  # RetryState.CANCELLED as earlier versions stored it


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
    units: int | None = None  # what its batch weighs in the provider's queue (see job.queue_budget)
    queue_key: str | None = None

    def __post_init__(self) -> None:
        self.kind = ChunkKind(self.kind)
        self.state = ChunkState(self.state)

    def skipped_lines(self) -> set[tuple[int, int]]:
        return {(f, n) for f, n in json.loads(self.skipped)} if self.skipped else set()


_CHUNK_COLS = ", ".join(ChunkRow.__dataclass_fields__)


class Ledger:
    def __init__(self, path: str, *, readonly: bool = False):
        self.path = path
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ledger")
        self._readonly = readonly
        self._db: sqlite3.Connection = self._pool.submit(self._connect).result()

    def _connect(self) -> sqlite3.Connection:
        if self._readonly:
            db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, isolation_level=None,
                                 check_same_thread=False, timeout=30)
            return db
        fresh = not os.path.exists(self.path)
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
        if fresh:
            os.chmod(self.path, 0o600)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.executescript(SCHEMA)
        columns = {row[1] for row in db.execute("PRAGMA table_info(chunks)")}
        for column, kind in (("skipped", "TEXT"), ("units", "INTEGER"), ("queue_key", "TEXT")):
            if column not in columns:  # a ledger made before the column existed (a job resumed after an upgrade)
                db.execute(f"ALTER TABLE chunks ADD COLUMN {column} {kind}")
        # a ledger made before RetryState had one spelling (one statement: atomic, and a no-op once done)
        db.execute("UPDATE retries SET state=? WHERE state=?", (RetryState.CANCELLED, _OLD_CANCELLED))
        for side in ("-wal", "-shm"):  # owner only, whatever the umask
            if os.path.exists(self.path + side):
                os.chmod(self.path + side, 0o600)
        return db

    def close(self) -> None:
        self._pool.submit(self._db.close).result()
        self._pool.shutdown(wait=True)

    # -- plumbing -------------------------------------------------------------------------------

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run one transaction on the ledger thread; a cancelled caller cannot tear it."""
        loop = asyncio.get_running_loop()
        fut = loop.run_in_executor(self._pool, self._tx, fn)
        return await asyncio.shield(fut)

    def _tx(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            out = fn(db)
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
        if isinstance(out, sqlite3.Cursor):
            # a cursor must die on this thread: finalised on the event loop's thread it would reset a
            # statement while this thread runs another (SQLITE_MISUSE)
            out.close()
            return None  # type: ignore[return-value]
        return out

    def sync(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Blocking form, for commands that run outside an event loop."""
        return self._pool.submit(self._tx, fn).result()

    # -- job identity ---------------------------------------------------------------------------

    def read_meta(self) -> dict[str, Any]:
        def q(db: sqlite3.Connection) -> dict[str, Any]:
            return {k: json.loads(v) for k, v in db.execute("SELECT key, value FROM meta")}
        return self._pool.submit(q, self._db).result()

    @staticmethod
    def _write_meta(db: sqlite3.Connection, values: dict[str, Any]) -> None:
        db.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", [(k, json.dumps(v)) for k, v in values.items()])

    def write_meta(self, values: dict[str, Any]) -> None:
        self.sync(lambda db: self._write_meta(db, values))

    async def is_cancelled(self) -> bool:
        """Whether `cancel` marked the job (read by every run before it sends a batch: off the loop)."""
        def q(db: sqlite3.Connection) -> bool:
            row = db.execute("SELECT value FROM meta WHERE key='cancelled'").fetchone()
            return bool(row and json.loads(row[0]))
        return await self._run(q)

    async def set_cancelled(self, cancelled: bool) -> None:
        """`cancel` marks the job: no run sends a new batch until `--retry-cancelled` clears the mark."""
        await self._run(lambda db: self._write_meta(db, {"cancelled": cancelled}))

    async def record_accepted_total(self, n: int) -> None:
        """Every input line has been read: how many requests the job has (`status` counts what is to go)."""
        await self._run(lambda db: self._write_meta(db, {"accepted_total": n}))

    # -- chunks ---------------------------------------------------------------------------------

    @staticmethod
    def _rows(cur: Iterable[tuple]) -> list[ChunkRow]:
        return [ChunkRow(*r) for r in cur]

    async def chunks_of_root(self, seq: int) -> list[ChunkRow]:
        return await self._run(lambda db: self._rows(db.execute(
            f"SELECT {_CHUNK_COLS} FROM chunks WHERE root_seq = ? ORDER BY skip, id", (seq,))))

    async def chunks_in(self, *states: str) -> list[ChunkRow]:
        marks = ",".join("?" * len(states))
        return await self._run(lambda db: self._rows(db.execute(
            f"SELECT {_CHUNK_COLS} FROM chunks WHERE state IN ({marks}) ORDER BY id", states)))

    async def chunk(self, chunk_id: int) -> ChunkRow:
        return await self._run(lambda db: self._rows(db.execute(
            f"SELECT {_CHUNK_COLS} FROM chunks WHERE id=?", (chunk_id,)))[0])

    def all_chunks(self) -> list[ChunkRow]:
        return self._pool.submit(lambda: self._rows(self._db.execute(
            f"SELECT {_CHUNK_COLS} FROM chunks ORDER BY id"))).result()

    async def claimed_batch_ids(self) -> set[str]:
        return await self._run(lambda db: {r[0] for r in db.execute(
            "SELECT batch_id FROM chunks WHERE batch_id IS NOT NULL")})

    async def record_intent(self, *, kind: ChunkKind, take: int, nbytes: int, root_seq: int | None = None,
                            skip: int = 0, span: tuple[int, int, int, int, int] | None = None,
                            attempt: int = 1, est_cost: float = 0.0, chunk_id: int | None = None,
                            retry_ids: list[str] | None = None, skipped: list[tuple[int, int]] | None = None,
                            units: int | None = None, queue_key: str | None = None) -> int:
        """Write-ahead step 1. A new chunk row (or an existing one sent again) in state submitting."""
        now = time.time()

        def q(db: sqlite3.Connection) -> int:
            if chunk_id is not None:
                # `take` stays: it places the chunk in its root; what is sent may be fewer (refusals)
                db.execute("UPDATE chunks SET state=?, intent_at=?, nbytes=?, est_cost=?, units=?, queue_key=?"
                           " WHERE id=?", (ChunkState.SUBMITTING, now, nbytes, est_cost, units, queue_key, chunk_id))
                return chunk_id
            sf, sp, sl, ef, ep = span or (None, None, None, None, None)
            cur = db.execute(
                "INSERT INTO chunks (kind, root_seq, skip, take, start_file, start_pos, start_line, end_file,"
                " end_pos, nbytes, state, attempt, intent_at, est_cost, skipped, units, queue_key)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (kind, root_seq, skip, take, sf, sp, sl, ef, ep, nbytes, ChunkState.SUBMITTING, attempt, now,
                 est_cost, json.dumps(skipped) if skipped else None, units, queue_key))
            new_id = int(cur.lastrowid or 0)
            if retry_ids:
                db.executemany("UPDATE retries SET chunk_id=?, state=? WHERE custom_id=?",
                               [(new_id, RetryState.ASSIGNED, cid) for cid in retry_ids])
            return new_id
        return await self._run(q)

    async def record_submitted(self, chunk_id: int, batch_id: str, *, adopted: bool = False) -> None:
        """Write-ahead step 2: the batch id, the moment create returned (or the batch was adopted)."""
        await self._run(lambda db: db.execute(
            "UPDATE chunks SET state=?, batch_id=?, adopted=?, submitted_at=? WHERE id=?",
            (ChunkState.SUBMITTED, batch_id, int(adopted), time.time(), chunk_id)))

    async def set_state(self, chunk_id: int, state: ChunkState, note: str | None = None) -> None:
        await self._run(lambda db: db.execute(
            "UPDATE chunks SET state=?, note=COALESCE(?, note) WHERE id=?", (state, note, chunk_id)))

    async def set_note(self, chunk_id: int, note: str) -> None:
        """What happened to a chunk's batch that changes no state (a cancel asked of the provider)."""
        await self._run(lambda db: db.execute("UPDATE chunks SET note=? WHERE id=?", (note, chunk_id)))

    async def disown(self, chunk_id: int, note: str) -> None:
        """An adopted batch turned out not to be ours: forget it, send the chunk again."""
        await self._run(lambda db: db.execute(
            "UPDATE chunks SET state=?, batch_id=NULL, adopted=0, note=? WHERE id=?",
            (ChunkState.PLANNED, note, chunk_id)))

    async def record_queue_full(self, chunk_id: int, note: str, *, counter: str, limits: dict[str, Any]) -> None:
        """The provider's queue was full for this chunk's batch (a 429 at create, or a batch it failed for its
        token limit): the chunk waits to be sent again and none of its requests has used an attempt; the
        answer is counted and what admission learned from it kept, in one transaction."""
        def q(db: sqlite3.Connection) -> None:
            db.execute("UPDATE chunks SET state=?, note=? WHERE id=?", (ChunkState.PLANNED, note, chunk_id))
            db.execute("INSERT INTO counters VALUES (?, 1) ON CONFLICT(name) DO UPDATE SET value = value + 1",
                       (counter,))
            self._write_meta(db, {"queue_limits": limits})
        await self._run(q)

    async def record_queue_limits(self, doc: dict[str, Any]) -> None:
        """What admission learned of the provider's queues (`queue_limit`), for the next run to start from."""
        await self._run(lambda db: self._write_meta(db, {"queue_limits": doc}))

    async def mark_ended(self, chunk_id: int, ended_at: float | None) -> None:
        await self._run(lambda db: db.execute(
            "UPDATE chunks SET ended_at=COALESCE(ended_at, ?) WHERE id=?", (ended_at or time.time(), chunk_id)))

    async def record_split(self, chunk_id: int, halves: list[tuple[int, int, int, list[str]]]) -> list[int]:
        """Replace a chunk by smaller ones: (skip, take, nbytes, custom_ids) each. Returns the new ids.

        skip/take place an input chunk's part in its root chunk; a retry chunk's requests move by custom_id.
        """
        def q(db: sqlite3.Connection) -> list[int]:
            row = db.execute(f"SELECT {_CHUNK_COLS} FROM chunks WHERE id=?", (chunk_id,)).fetchone()
            parent = ChunkRow(*row)
            db.execute("UPDATE chunks SET state=? WHERE id=?", (ChunkState.SPLIT, chunk_id))
            new_ids: list[int] = []
            for skip, take, nbytes, ids in halves:
                cur = db.execute(
                    "INSERT INTO chunks (kind, root_seq, skip, take, start_file, start_pos, start_line,"
                    " end_file, end_pos, nbytes, state, attempt, note, skipped) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                    (parent.kind, parent.root_seq, skip, take, parent.start_file, parent.start_pos,
                     parent.start_line, parent.end_file, parent.end_pos, nbytes, ChunkState.PLANNED,
                     parent.attempt, f"split from {chunk_id}", parent.skipped))
                new_ids.append(int(cur.lastrowid or 0))
                if parent.kind == ChunkKind.RETRY:
                    db.executemany("UPDATE retries SET chunk_id=? WHERE custom_id=?", [(new_ids[-1], c) for c in ids])
            return new_ids
        return await self._run(q)

    # -- requests refused by the API at create time ----------------------------------------------

    async def record_api_rejected(self, root_seq: int | None, custom_id: str, message: str) -> None:
        def q(db: sqlite3.Connection) -> None:
            db.execute("INSERT OR REPLACE INTO api_rejected VALUES (?, ?, ?)", (custom_id, root_seq, message))
            db.execute("UPDATE retries SET state=?, chunk_id=NULL WHERE custom_id=?", (RetryState.DONE, custom_id))
        await self._run(q)

    async def api_rejected(self, root_seq: int | None = None) -> dict[str, str]:
        if root_seq is None:
            return await self._run(lambda db: dict(db.execute("SELECT custom_id, message FROM api_rejected")))
        return await self._run(lambda db: dict(db.execute(
            "SELECT custom_id, message FROM api_rejected WHERE root_seq=?", (root_seq,))))

    # -- retries --------------------------------------------------------------------------------

    async def retry_requests(self, chunk_id: int) -> list[tuple[str, bytes, int]]:
        """(custom_id, request line, attempts so far) assigned to a retry chunk."""
        return await self._run(lambda db: [(c, bytes(r), a) for c, r, a in db.execute(
            "SELECT custom_id, request, attempts FROM retries WHERE chunk_id=? ORDER BY custom_id",
            (chunk_id,))])

    async def pending_retries(self, limit: int) -> list[tuple[str, bytes, int]]:
        return await self._run(lambda db: [(c, bytes(r), a) for c, r, a in db.execute(
            "SELECT custom_id, request, attempts FROM retries WHERE state=? ORDER BY attempts, custom_id"
            " LIMIT ?", (RetryState.PENDING, limit))])

    async def count_retries(self, state: RetryState) -> int:
        return await self._run(lambda db: db.execute(
            "SELECT COUNT(*) FROM retries WHERE state=?", (state,)).fetchone()[0])

    async def requeue(self, state: RetryState) -> int:
        """Requests parked as `state` (CANCELLED, FAILED) wait for another attempt again."""
        return await self._run(lambda db: db.execute(
            "UPDATE retries SET state=?, chunk_id=NULL WHERE state=?", (RetryState.PENDING, state)).rowcount)

    # -- collection -----------------------------------------------------------------------------

    async def shard_offsets(self, shards: int) -> list[int]:
        def q(db: sqlite3.Connection) -> list[int]:
            got = dict(db.execute("SELECT idx, offset FROM shards"))
            return [int(got.get(i, 0)) for i in range(shards)]
        return await self._run(q)

    @staticmethod
    def _park(db: sqlite3.Connection, park: list[tuple[str, bytes, int, RetryState, bytes]]) -> None:
        db.executemany(
            "INSERT INTO retries (custom_id, request, attempts, chunk_id, state, last_line)"
            " VALUES (?, ?, ?, NULL, ?, ?) ON CONFLICT(custom_id) DO UPDATE SET"
            " request=excluded.request, attempts=excluded.attempts, chunk_id=NULL,"
            " state=excluded.state, last_line=excluded.last_line", park)

    async def record_collected(self, chunk_id: int, *, offsets: list[int], counts: dict[str, float],
                               park: list[tuple[str, bytes, int, RetryState, bytes]], finals: list[str],
                               objects: list[tuple[str, int, int, int]] | None = None) -> None:
        """Write-ahead step 3 (after the shard fsync): collected, offsets, counts, parked requests.

        park: (custom_id, request, attempts, state PENDING or CANCELLED, last result line).
        finals: custom_ids of retried requests whose final line is now in the shards.
        objects: result objects uploaded for this batch, (key, shard, bytes, lines): listed here, they count.
        """
        now = time.time()

        def q(db: sqlite3.Connection) -> None:
            db.executemany("INSERT OR REPLACE INTO shards VALUES (?, ?)", list(enumerate(offsets)))
            if objects:
                db.executemany("INSERT INTO result_objects VALUES (?, ?, ?, ?, ?)",
                               [(k, chunk_id, shard, nbytes, lines) for k, shard, nbytes, lines in objects])
            self._park(db, park)
            db.executemany("UPDATE retries SET state=?, chunk_id=NULL WHERE custom_id=?",
                           [(RetryState.DONE, c) for c in finals])
            db.executemany(
                "INSERT INTO counters VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET value = value + excluded.value",
                list(counts.items()))
            db.execute("UPDATE chunks SET state=?, collected_at=?, ended_at=COALESCE(ended_at, ?) WHERE id=?",
                       (ChunkState.COLLECTED, now, now, chunk_id))
        await self._run(q)

    async def record_failed(self, chunk_id: int, *, park: list[tuple[str, bytes, int, RetryState, bytes]],
                            note: str | None) -> None:
        """The provider failed a batch as a whole: its requests are parked (PENDING, or FAILED once out of
        attempts) in the same transaction that marks the chunk failed."""
        def q(db: sqlite3.Connection) -> None:
            self._park(db, park)
            db.execute("INSERT INTO counters VALUES ('batches_failed', 1)"
                       " ON CONFLICT(name) DO UPDATE SET value = value + 1")
            db.execute("UPDATE chunks SET state=?, note=COALESCE(?, note) WHERE id=?",
                       (ChunkState.FAILED, note, chunk_id))
        await self._run(q)

    async def add_counts(self, counts: dict[str, float]) -> None:
        await self._run(lambda db: db.executemany(
            "INSERT INTO counters VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET value = value + excluded.value",
            list(counts.items())))

    def result_objects(self) -> list[str]:
        """Keys of the result objects the ledger lists (the committed ones), in order."""
        return self._pool.submit(lambda: [k for (k,) in self._db.execute(
            "SELECT key FROM result_objects ORDER BY key")]).result()

    def counters(self) -> dict[str, float]:
        return self._pool.submit(lambda: dict(self._db.execute("SELECT name, value FROM counters"))).result()

    async def acounters(self) -> dict[str, float]:
        return await self._run(lambda db: dict(db.execute("SELECT name, value FROM counters")))

    def retry_counts(self) -> dict[RetryState, int]:
        """Parked requests by state; a ledger opened read-only may still spell CANCELLED the old way."""
        def q() -> dict[RetryState, int]:
            out: dict[RetryState, int] = {}
            for state, n in self._db.execute("SELECT state, COUNT(*) FROM retries GROUP BY state"):
                key = RetryState.CANCELLED if state == _OLD_CANCELLED else RetryState(state)
                out[key] = out.get(key, 0) + n
            return out
        return self._pool.submit(q).result()
