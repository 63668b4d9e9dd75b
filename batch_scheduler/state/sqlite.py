"""The ledger: an embedded SQLite database (WAL) at DIR/ledger.db, the truth about a job.

Write-ahead order, which every caller keeps:
  1. `record_intent` before a create call is sent (state `submitting`, with the time);
  2. `record_submitted` the moment create returns a batch id;
  3. shard lines are flushed and fsync'd first, then `record_collected` marks the batch collected,
     moves the shard offsets forward and adds the counts, in one transaction.
A crash between 1 and 2 leaves `submitting`: the next run looks for the batch before sending again.
A crash between 3's two halves leaves lines past the recorded offsets: the next run truncates them.

Per-request rows exist only for the few requests that need another attempt (`retries`, each with
the time before which it is not sent again) or were refused by the API (`api_rejected`); each input
chunk keeps the list of its custom_ids (`chunk_ids`, read back one batch at a time by the collector).
Every method is one transaction, run on the ledger's own thread and shielded from cancellation, so a
cancelled task cannot tear a state change. The job's creation, every batch id and every collection
are checkpointed into ledger.db at once, so the main file alone knows the job: a lost ledger.db-wal
loses no batch and no result of it.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import orjson

from batch_scheduler.core import errors
from batch_scheduler.state.rows import (  # noqa: F401 - the ledger's names, re-exported
    _OLD_CANCELLED,
    ADDED_COLUMNS,
    SCHEMA,
    ChunkKind,
    ChunkRow,
    ChunkState,
    RetryState,
    RetryWait,
)

T = TypeVar("T")


class Ledger:
    def __init__(self, path: str, *, readonly: bool = False):
        self.path = path
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ledger")
        self._readonly = readonly
        try:
            self._db: sqlite3.Connection = self._pool.submit(self._connect).result()
        except sqlite3.Error as err:
            self._pool.shutdown(wait=False)
            raise errors.from_sqlite(err, path) or err from None

    def _connect(self) -> sqlite3.Connection:
        if self._readonly:
            db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, isolation_level=None,
                                 check_same_thread=False, timeout=30)
            self._select_columns(db)
            return db
        fresh = not os.path.exists(self.path)
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
        if fresh:
            os.chmod(self.path, 0o600)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.executescript(SCHEMA)
        columns = {row[1] for row in db.execute("PRAGMA table_info(chunks)")}
        for name, kind in ADDED_COLUMNS.items():  # a ledger made before the column (a job resumed after an upgrade)
            if name not in columns:
                db.execute(f"ALTER TABLE chunks ADD COLUMN {name} {kind}")
        if "not_before" not in {row[1] for row in db.execute("PRAGMA table_info(retries)")}:
            db.execute("ALTER TABLE retries ADD COLUMN not_before REAL NOT NULL DEFAULT 0")
        self._select_columns(db)
        # a ledger made before RetryState had one spelling (one statement: atomic, and a no-op once done)
        db.execute("UPDATE retries SET state=? WHERE state=?", (RetryState.CANCELLED, _OLD_CANCELLED))
        for side in ("-wal", "-shm"):  # owner only, whatever the umask
            if os.path.exists(self.path + side):
                os.chmod(self.path + side, 0o600)
        return db

    def _select_columns(self, db: sqlite3.Connection) -> None:
        """What a SELECT of a chunk row names: a column an older ledger lacks (read-only: not migrated) is NULL."""
        have = {row[1] for row in db.execute("PRAGMA table_info(chunks)")}
        self._cols = ", ".join(c if c in have or not have else f"NULL AS {c}" for c in ChunkRow.__dataclass_fields__)

    def close(self) -> None:
        self._pool.submit(self._db.close).result()
        self._pool.shutdown(wait=True)

    # -- plumbing -------------------------------------------------------------------------------

    async def _run(self, fn: Callable[[sqlite3.Connection], T], *, checkpoint: bool = False) -> T:
        """Run one transaction on the ledger thread; a cancelled caller cannot tear it."""
        loop = asyncio.get_running_loop()
        fut = loop.run_in_executor(self._pool, self._tx, fn, checkpoint)
        return await asyncio.shield(fut)

    def _tx(self, fn: Callable[[sqlite3.Connection], T], checkpoint: bool = False) -> T:
        """One transaction; with `checkpoint`, then copied from the WAL into ledger.db (as far as readers let)."""
        try:
            out = self._tx_once(fn)
            if checkpoint:
                self._db.execute("PRAGMA wal_checkpoint(PASSIVE)").close()
            return out
        except sqlite3.Error as err:
            raise errors.from_sqlite(err, self.path) or err from None

    def _tx_once(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            out = fn(db)
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
        if isinstance(out, sqlite3.Cursor):
            # a cursor must die on this thread: finalised on the event loop's thread it would reset a
            # statement while this thread runs another (SQLITE_MISUSE)
            out.close()
            return None  # type: ignore[return-value]
        return out

    def sync(self, fn: Callable[[sqlite3.Connection], T], *, checkpoint: bool = False) -> T:
        """Blocking form, for commands that run outside an event loop."""
        return self._pool.submit(self._tx, fn, checkpoint).result()

    def _read(self, fn: Callable[[], T]) -> T:
        """A read outside a transaction, on the ledger thread (blocking)."""
        def q() -> T:
            try:
                return fn()
            except sqlite3.Error as err:
                raise errors.from_sqlite(err, self.path) or err from None
        return self._pool.submit(q).result()

    # -- job identity ---------------------------------------------------------------------------

    def read_meta(self) -> dict[str, Any]:
        return self._read(lambda: {k: json.loads(v) for k, v in self._db.execute("SELECT key, value FROM meta")})

    def read_queue_limits(self) -> Any:
        """What admission learned of the provider's queues (`record_queue_limits`), for a run to start from."""
        return self.read_meta().get("queue_limits")

    @staticmethod
    def _write_meta(db: sqlite3.Connection, values: dict[str, Any]) -> None:
        db.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", [(k, json.dumps(v)) for k, v in values.items()])

    def write_meta(self, values: dict[str, Any]) -> None:
        self.sync(lambda db: self._write_meta(db, values), checkpoint=True)

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
            f"SELECT {self._cols} FROM chunks WHERE root_seq = ? ORDER BY skip, id", (seq,))))

    async def chunks_in(self, *states: str) -> list[ChunkRow]:
        marks = ",".join("?" * len(states))
        return await self._run(lambda db: self._rows(db.execute(
            f"SELECT {self._cols} FROM chunks WHERE state IN ({marks}) ORDER BY id", states)))

    async def chunk(self, chunk_id: int) -> ChunkRow:
        return await self._run(lambda db: self._rows(db.execute(
            f"SELECT {self._cols} FROM chunks WHERE id=?", (chunk_id,)))[0])

    def all_chunks(self) -> list[ChunkRow]:
        return self._read(lambda: self._rows(self._db.execute(f"SELECT {self._cols} FROM chunks ORDER BY id")))

    async def claimed_batch_ids(self) -> set[str]:
        return await self._run(lambda db: {r[0] for r in db.execute(
            "SELECT batch_id FROM chunks WHERE batch_id IS NOT NULL")})

    def batch_ids_since(self, since: float) -> set[str]:
        """Batch ids this job recorded at or after `since` (blocking; another job's adoption asks)."""
        return self._read(lambda: {r[0] for r in self._db.execute(
            "SELECT batch_id FROM chunks WHERE batch_id IS NOT NULL AND submitted_at >= ?", (since,))})

    async def record_intent(self, *, kind: ChunkKind, take: int, nbytes: int, root_seq: int | None = None,
                            skip: int = 0, span: tuple[int, int, int, int, int] | None = None,
                            attempt: int = 1, est_cost: float = 0.0, chunk_id: int | None = None,
                            retry_ids: list[str] | None = None, skipped: list[tuple[int, int]] | None = None,
                            digest: str | None = None, ids: list[str] | None = None,
                            units: int | None = None, queue_key: str | None = None) -> int:
        """Write-ahead step 1. A new chunk row (or an existing one sent again) in state submitting.

        digest: an input chunk's `batcher.chunk_digest` as cut, checked whenever the chunk is read again.
        ids: the custom_ids of a new input chunk, kept for the collector's completeness check.
        units, queue_key: what the batch weighs in the provider's queue, and which queue (job.queue_budget)."""
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
                " end_pos, nbytes, state, attempt, intent_at, est_cost, skipped, digest, units, queue_key)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (kind, root_seq, skip, take, sf, sp, sl, ef, ep, nbytes, ChunkState.SUBMITTING, attempt, now,
                 est_cost, json.dumps(skipped) if skipped else None, digest, units, queue_key))
            new_id = int(cur.lastrowid or 0)
            if retry_ids:
                db.executemany("UPDATE retries SET chunk_id=?, state=? WHERE custom_id=?",
                               [(new_id, RetryState.ASSIGNED, cid) for cid in retry_ids])
            if ids is not None:
                db.execute("INSERT OR REPLACE INTO chunk_ids VALUES (?, ?)", (new_id, orjson.dumps(ids)))
            return new_id
        return await self._run(q)

    async def chunk_ids(self, chunk_id: int) -> list[str] | None:
        """The custom_ids an input chunk carries; None for a chunk recorded without them (an earlier version)."""
        def q(db: sqlite3.Connection) -> list[str] | None:
            row = db.execute("SELECT ids FROM chunk_ids WHERE chunk_id=?", (chunk_id,)).fetchone()
            return orjson.loads(row[0]) if row else None
        return await self._run(q)

    async def record_submitted(self, chunk_id: int, batch_id: str, *, adopted: bool = False) -> None:
        """Write-ahead step 2: the batch id, the moment create returned (or the batch was adopted)."""
        await self._run(lambda db: db.execute(
            "UPDATE chunks SET state=?, batch_id=?, adopted=?, submitted_at=? WHERE id=?",
            (ChunkState.SUBMITTED, batch_id, int(adopted), time.time(), chunk_id)), checkpoint=True)

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
            row = db.execute(f"SELECT {self._cols} FROM chunks WHERE id=?", (chunk_id,)).fetchone()
            parent = ChunkRow(*row)
            db.execute("UPDATE chunks SET state=? WHERE id=?", (ChunkState.SPLIT, chunk_id))
            new_ids: list[int] = []
            for skip, take, nbytes, ids in halves:
                cur = db.execute(
                    "INSERT INTO chunks (kind, root_seq, skip, take, start_file, start_pos, start_line,"
                    " end_file, end_pos, nbytes, state, attempt, note, skipped, digest)"
                    " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                    (parent.kind, parent.root_seq, skip, take, parent.start_file, parent.start_pos,
                     parent.start_line, parent.end_file, parent.end_pos, nbytes, ChunkState.PLANNED,
                     parent.attempt, f"split from {chunk_id}", parent.skipped, parent.digest))
                new_ids.append(int(cur.lastrowid or 0))
                if parent.kind == ChunkKind.RETRY:
                    db.executemany("UPDATE retries SET chunk_id=? WHERE custom_id=?", [(new_ids[-1], c) for c in ids])
                else:
                    db.execute("INSERT OR REPLACE INTO chunk_ids VALUES (?, ?)", (new_ids[-1], orjson.dumps(ids)))
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

    def read_api_rejected(self) -> dict[str, str]:
        """`api_rejected()` for a reader without an event loop (export), blocking."""
        return self._pool.submit(lambda: dict(self._db.execute("SELECT custom_id, message FROM api_rejected"))).result()

    # -- retries --------------------------------------------------------------------------------

    async def retry_requests(self, chunk_id: int) -> list[tuple[str, bytes, int]]:
        """(custom_id, request line, attempts so far) assigned to a retry chunk."""
        return await self._run(lambda db: [(c, bytes(r), a) for c, r, a in db.execute(
            "SELECT custom_id, request, attempts FROM retries WHERE chunk_id=? ORDER BY custom_id",
            (chunk_id,))])

    async def pending_retries(self, limit: int, now: float | None = None) -> list[tuple[str, bytes, int]]:
        """Up to `limit` pending requests whose wait is over (fewest attempts first)."""
        at = time.time() if now is None else now
        return await self._run(lambda db: [(c, bytes(r), a) for c, r, a in db.execute(
            "SELECT custom_id, request, attempts FROM retries WHERE state=? AND not_before <= ?"
            " ORDER BY attempts, custom_id LIMIT ?", (RetryState.PENDING, at, limit))])

    async def next_retry_at(self) -> float | None:
        """When the next pending request's wait is over (epoch seconds), or None when none is pending."""
        return await self._run(lambda db: db.execute(
            "SELECT MIN(not_before) FROM retries WHERE state=?", (RetryState.PENDING,)).fetchone()[0])

    async def count_retries(self, state: RetryState) -> int:
        return await self._run(lambda db: db.execute(
            "SELECT COUNT(*) FROM retries WHERE state=?", (state,)).fetchone()[0])

    async def requeue(self, state: RetryState) -> int:
        """Requests parked as `state` (CANCELLED, FAILED) wait for another attempt again."""
        return await self._run(lambda db: db.execute(
            "UPDATE retries SET state=?, chunk_id=NULL WHERE state=?", (RetryState.PENDING, state)).rowcount)

    # -- collection -----------------------------------------------------------------------------

    @staticmethod
    def _offsets(db: sqlite3.Connection, shards: int) -> list[int]:
        got = dict(db.execute("SELECT idx, offset FROM shards"))
        return [int(got.get(i, 0)) for i in range(shards)]

    async def shard_offsets(self, shards: int) -> list[int]:
        return await self._run(lambda db: self._offsets(db, shards))

    def read_shard_offsets(self, shards: int) -> list[int]:
        """`shard_offsets()` for a reader without an event loop (export), blocking."""
        return self._pool.submit(self._offsets, self._db, shards).result()

    @staticmethod
    def _park(db: sqlite3.Connection, park: list[tuple[str, bytes, int, RetryState, bytes | None]],
              wait: RetryWait | None = None, now: float = 0.0) -> None:
        wait = wait or RetryWait()
        db.executemany(
            "INSERT INTO retries (custom_id, request, attempts, chunk_id, state, last_line, not_before)"
            " VALUES (?, ?, ?, NULL, ?, ?, ?) ON CONFLICT(custom_id) DO UPDATE SET"
            " request=excluded.request, attempts=excluded.attempts, chunk_id=NULL,"
            " state=excluded.state, last_line=excluded.last_line, not_before=excluded.not_before",
            [(*p, now + wait.after(p[2]) if wait.first_s else 0.0) for p in park])

    async def record_collected(self, chunk_id: int, *, offsets: list[int], counts: dict[str, float],
                               park: list[tuple[str, bytes, int, RetryState, bytes | None]], finals: list[str],
                               wait: RetryWait | None = None, now: float | None = None,
                               objects: list[tuple[str, int, int, int]] | None = None) -> None:
        """Write-ahead step 3 (after the shard fsync): collected, offsets, counts, parked requests.

        park: (custom_id, request, attempts, state PENDING, CANCELLED or FAILED, last result line or None when
        the results left the request out); each waits `wait.after(attempts)` before it is sent again.
        finals: custom_ids of retried requests whose final line is now in the shards.
        objects: result objects uploaded for this batch, (key, shard, bytes, lines): listed here, they count.
        """
        now = time.time() if now is None else now

        def q(db: sqlite3.Connection) -> None:
            db.executemany("INSERT OR REPLACE INTO shards VALUES (?, ?)", list(enumerate(offsets)))
            if objects:
                db.executemany("INSERT INTO result_objects VALUES (?, ?, ?, ?, ?)",
                               [(k, chunk_id, shard, nbytes, lines) for k, shard, nbytes, lines in objects])
            self._park(db, park, wait, now)
            db.executemany("UPDATE retries SET state=?, chunk_id=NULL WHERE custom_id=?",
                           [(RetryState.DONE, c) for c in finals])
            db.executemany(
                "INSERT INTO counters VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET value = value + excluded.value",
                list(counts.items()))
            db.execute("UPDATE chunks SET state=?, collected_at=?, ended_at=COALESCE(ended_at, ?) WHERE id=?",
                       (ChunkState.COLLECTED, now, now, chunk_id))
        await self._run(q, checkpoint=True)

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
        return self._read(lambda: dict(self._db.execute("SELECT name, value FROM counters")))

    async def acounters(self) -> dict[str, float]:
        return await self._run(lambda db: dict(db.execute("SELECT name, value FROM counters")))

    def each_retried_final(self, fn: Callable[[str, int], None]) -> None:
        """fn(custom_id, attempts before the final one) for each request that was sent again and is final
        now, blocking (export counts attempts; no list of them is held here)."""
        def q() -> None:
            for cid, attempts in self._db.execute("SELECT custom_id, attempts FROM retries WHERE state=?",
                                                  (RetryState.DONE,)):
                fn(cid, attempts)
        self._pool.submit(q).result()

    def retry_counts(self) -> dict[RetryState, int]:
        """Parked requests by state; a ledger opened read-only may still spell CANCELLED the old way."""
        def q() -> dict[RetryState, int]:
            out: dict[RetryState, int] = {}
            for state, n in self._db.execute("SELECT state, COUNT(*) FROM retries GROUP BY state"):
                key = RetryState.CANCELLED if state == _OLD_CANCELLED else RetryState(state)
                out[key] = out.get(key, 0) + n
            return out
        return self._read(q)
