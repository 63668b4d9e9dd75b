"""The SQLite ledger: an embedded database (WAL) at DIR/ledger.db, the truth about a job.

It keeps the `Ledger` interface and its write-ahead order (state/ledger/base.py); its recipes are the ones
the PostgreSQL ledger shares (recipes.py), over the statements of sql/sqlite.sql. Per-request rows exist
only for the few requests that need another attempt (`retries`, each with the time before which it is
not sent again) or were refused by the API (`api_rejected`); each input chunk keeps the list of its
custom_ids (`chunk_ids`, read back one batch at a time by the collector). Every method is one
transaction, run on the ledger's own thread and shielded from cancellation, so a cancelled task cannot
tear a state change. The job's creation, every batch id and every collection are checkpointed into
ledger.db at once, so the main file alone knows the job: a lost ledger.db-wal loses no batch and no
result of it.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from batch_scheduler.core import errors
from batch_scheduler.state.ledger.queries import statements
from batch_scheduler.state.ledger.recipes import SqlLedger
from batch_scheduler.state.ledger.rows import (  # noqa: F401 - the ledger's names, re-exported
    _OLD_CANCELLED,
    ADDED_COLUMNS,
    MARK_OLD_SUBMITTING,
    SCHEMA,
    ChunkKind,
    ChunkRow,
    ChunkState,
    RetryState,
    RetryWait,
)

T = TypeVar("T")


class SqliteLedger(SqlLedger):
    def __init__(self, path: str, *, readonly: bool = False):
        self.path = path
        self.key: dict[str, Any] = {}
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ledger")
        self._readonly = readonly
        try:
            self._db: sqlite3.Connection = self._pool.submit(self._connect).result()
        except sqlite3.Error as err:
            self._pool.shutdown(wait=False)
            raise from_sqlite(err, path) or err from None

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
                if name == "create_at":
                    db.execute(MARK_OLD_SUBMITTING)
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
        self.q = statements("sqlite", ", ".join(c if c in have or not have else f"NULL AS {c}"
                                                for c in ChunkRow.__dataclass_fields__))

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
            raise from_sqlite(err, self.path) or err from None

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

    def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """A read outside a transaction, on the ledger thread (blocking)."""
        def q() -> T:
            try:
                return fn(self._db)
            except sqlite3.Error as err:
                raise from_sqlite(err, self.path) or err from None
        return self._pool.submit(q).result()

    # -- what only this backend keeps in meta ---------------------------------------------------

    async def is_cancelled(self) -> bool:
        """Whether `cancel` marked the job (read by every run before it sends a batch: off the loop)."""
        def q(db: sqlite3.Connection) -> bool:
            rows = self._all(db, "is_cancelled")
            return bool(rows and json.loads(rows[0][0]))
        return await self._run(q)

    async def set_cancelled(self, cancelled: bool) -> None:
        """`cancel` marks the job: no run sends a new batch until `--retry-cancelled` clears the mark."""
        await self._run(lambda db: self._write_meta(db, {"cancelled": cancelled}))


Ledger = SqliteLedger  # the name callers and tests of a job directory's ledger have always used


def from_sqlite(err: sqlite3.Error, path: str) -> errors.SchedulerError | None:
    """What an SQLite error of the ledger at `path` means to a user, as one of ours; None for an unexpected one."""
    text = str(err)
    if isinstance(err, sqlite3.OperationalError) and ("full" in text or "disk I/O" in text):
        return errors.DiskFull(f"no room left to write {path} ({text})")
    if "not a database" in text or "malformed" in text or "file is encrypted" in text:
        return errors.UsageError(f"{path} cannot be read as a ledger ({text}): it is damaged; restore it from a "
                                 f"copy, or start the job afresh in another directory")
    if "no such table" in text:
        return errors.UsageError(f"{path} holds no ledger (an empty or foreign file); restore the job's ledger.db "
                                 f"from a copy, or start the job afresh in another directory")
    if "readonly" in text or "unable to open" in text:
        return errors.UsageError(f"cannot write {path} ({text}): check that its directory is writable")
    return None
