"""One cluster job's ledger in PostgreSQL: `core.ledger.Ledger`'s interface over the tables keyed by job.

The job layer runs over either backend unchanged. The write-ahead order is the SQLite ledger's (see
core/ledger.py); what is added is the fence. Every transaction first locks the job's row and checks
that it still carries this node's claim token and an unexpired lease (the database's clock):

    SELECT 1 FROM jobs WHERE id = %s AND claim_token = %s AND lease_until > clock_timestamp() FOR SHARE

A claim by another node takes the same row FOR UPDATE and writes a new token, so once it has
committed, every transaction of the old claim rolls back and raises `LeaseLost`: a stale node
writes nothing. A dropped connection raises `LedgerUnavailable`: the outcome of that transaction is
unknown, as after a crash, so the node drops the job and whoever claims it resumes from the ledger.

With a shared budget (`share`: budget.py), `record_intent` takes the batch's room in the provider's
queue in the same fenced transaction as the intent, and waits (outside any transaction) while there
is none; the room comes back when the batch ends or turns out never to have been created.

Each method is one transaction on the ledger's own thread, shielded from cancellation.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import orjson

from batch_scheduler.core import errors
from batch_scheduler.state import budget, pg
from batch_scheduler.state.sqlite import ChunkKind, ChunkRow, ChunkState, RetryState, RetryWait

T = TypeVar("T")
Cursor = Any

_CHUNK_COLS = ", ".join(ChunkRow.__dataclass_fields__)
ROOM_POLL_S = 0.1  # how often a job waiting for room in the shared budget looks again
_FREES = (ChunkState.PLANNED, ChunkState.DROPPED, ChunkState.FAILED, ChunkState.SPLIT)  # no batch holds room
_FENCE = ("SELECT 1 FROM jobs WHERE id = %s AND claim_token = %s AND lease_until > clock_timestamp() "
          "FOR SHARE")
_ADD = ("INSERT INTO counters (job_id, name, value) VALUES (%s, %s, %s) ON CONFLICT (job_id, name) "
        "DO UPDATE SET value = counters.value + excluded.value")
_PARK = ("INSERT INTO retries (job_id, custom_id, request, attempts, chunk_id, state, last_line, not_before)"
         " VALUES (%s, %s, %s, %s, NULL, %s, %s, %s) ON CONFLICT (job_id, custom_id) DO UPDATE SET"
         " request=excluded.request, attempts=excluded.attempts, chunk_id=NULL, state=excluded.state,"
         " last_line=excluded.last_line, not_before=excluded.not_before")


class PgLedger:
    """The ledger of job `job_id` for the claim `token` (None: read-only use, no fence)."""

    def __init__(self, url: str, job_id: int, token: str | None, *, name: str = ""):
        self.url = url
        self.job_id = job_id
        self.token = token
        self.name = name or str(job_id)
        self.fenced = False
        self.share: budget.Share | None = None  # the shared admission budget this job draws on, if any
        self.account: str | None = None  # the provider account (budget.account_of): what it learns is shared
        self.waited_s = 0.0  # time spent waiting for room in it
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pg-ledger")
        try:
            self._db = self._pool.submit(pg.connect, url).result()
        except BaseException:
            self._pool.shutdown(wait=False)
            raise

    def close(self) -> None:
        self._pool.submit(self._db.close).result()
        self._pool.shutdown(wait=True)

    # -- plumbing -------------------------------------------------------------------------------

    async def _run(self, fn: Callable[[Cursor], T]) -> T:
        loop = asyncio.get_running_loop()
        return await asyncio.shield(loop.run_in_executor(self._pool, self._tx, fn))

    def _tx(self, fn: Callable[[Cursor], T]) -> T:
        if self.fenced:
            raise self._lost()
        try:
            with self._db.transaction(), self._db.cursor() as cur:
                if self.token is not None:
                    cur.execute(_FENCE, (self.job_id, self.token))
                    if cur.fetchone() is None:
                        self.fenced = True
                        raise self._lost()
                return fn(cur)
        except errors.LeaseLost:
            raise
        except Exception as err:
            if pg.is_connection_error(err):
                raise pg.unavailable(self.url, err) from None
            raise

    def _lost(self) -> errors.LeaseLost:
        return errors.LeaseLost(f"job {self.name}: this node's claim is gone (its lease ran out or another "
                                f"node claimed the job); dropping it")

    def sync(self, fn: Callable[[Cursor], T]) -> T:
        return self._pool.submit(self._tx, fn).result()

    # -- job identity ---------------------------------------------------------------------------

    def read_meta(self) -> dict[str, Any]:
        return self.sync(lambda c: dict(c.execute("SELECT key, value FROM meta WHERE job_id=%s",
                                                  (self.job_id,)).fetchall()))

    def read_queue_limits(self) -> Any:
        """What admission learned of the provider's queues: the job's own, overlaid by what any job of the
        same account learned since (`learned`), so a job starting on any node starts from the account's."""
        def q(c: Cursor) -> Any:
            row = c.execute("SELECT value FROM meta WHERE job_id=%s AND key='queue_limits'", (self.job_id,)).fetchone()
            own = row[0] if row and isinstance(row[0], dict) else {}
            shared = dict(c.execute("SELECT queue_key, doc FROM learned WHERE account=%s",
                                    (self.account,)).fetchall()) if self.account else {}
            return {**own, **shared} or None
        return self.sync(q)

    def _learned(self, c: Cursor, limits: dict[str, Any]) -> None:
        """Admission's learned state, as the job keeps it, and for every job of the account."""
        self._write_meta(c, {"queue_limits": limits})
        if self.account and isinstance(limits, dict):
            c.executemany("INSERT INTO learned (account, queue_key, doc) VALUES (%s, %s, %s::jsonb)"
                          " ON CONFLICT (account, queue_key) DO UPDATE SET doc=excluded.doc, updated_at=clock_timestamp()",
                          [(self.account, k, json.dumps(v)) for k, v in limits.items()])

    def _write_meta(self, c: Cursor, values: dict[str, Any]) -> None:
        c.executemany("INSERT INTO meta (job_id, key, value) VALUES (%s, %s, %s::jsonb) ON CONFLICT (job_id, key)"
                      " DO UPDATE SET value = excluded.value",
                      [(self.job_id, k, json.dumps(v)) for k, v in values.items()])

    def write_meta(self, values: dict[str, Any]) -> None:
        self.sync(lambda c: self._write_meta(c, values))

    async def is_cancelled(self) -> bool:
        """`cancel --ledger URL NAME` marks the job's row; a run asks before every batch."""
        return await self._run(lambda c: bool(c.execute(
            "SELECT cancel_requested FROM jobs WHERE id=%s", (self.job_id,)).fetchone()[0]))

    async def set_cancelled(self, cancelled: bool) -> None:
        await self._run(lambda c: c.execute("UPDATE jobs SET cancel_requested=%s WHERE id=%s",
                                            (cancelled, self.job_id)))

    async def record_accepted_total(self, n: int) -> None:
        await self._run(lambda c: self._write_meta(c, {"accepted_total": n}))

    # -- chunks ---------------------------------------------------------------------------------

    @staticmethod
    def _rows(cur: Iterable[tuple]) -> list[ChunkRow]:
        return [ChunkRow(*r) for r in cur]

    def _select(self, c: Cursor, where: str, params: tuple) -> list[ChunkRow]:
        return self._rows(c.execute(f"SELECT {_CHUNK_COLS} FROM chunks WHERE job_id=%s AND {where}",
                                    (self.job_id, *params)).fetchall())

    async def chunks_of_root(self, seq: int) -> list[ChunkRow]:
        return await self._run(lambda c: self._select(c, "root_seq=%s ORDER BY skip, id", (seq,)))

    async def chunks_in(self, *states: str) -> list[ChunkRow]:
        return await self._run(lambda c: self._select(c, "state = ANY(%s) ORDER BY id", (list(states),)))

    async def chunk(self, chunk_id: int) -> ChunkRow:
        return (await self._run(lambda c: self._select(c, "id=%s", (chunk_id,))))[0]

    def all_chunks(self) -> list[ChunkRow]:
        return self.sync(lambda c: self._select(c, "TRUE ORDER BY id", ()))

    async def claimed_batch_ids(self) -> set[str]:
        """The job's batches, and those a stale node gave up (`record_orphan`): none is to be adopted."""
        return await self._run(lambda c: {r[0] for r in c.execute(
            "SELECT batch_id FROM chunks WHERE job_id=%s AND batch_id IS NOT NULL"
            " UNION SELECT batch_id FROM orphans WHERE job_id=%s", (self.job_id, self.job_id))})

    def batch_ids_since(self, since: float) -> set[str]:
        """Batch ids this job recorded at or after `since` (blocking; another job's adoption asks)."""
        return self.sync(lambda c: {r[0] for r in c.execute(
            "SELECT batch_id FROM chunks WHERE job_id=%s AND batch_id IS NOT NULL AND submitted_at >= %s",
            (self.job_id, since))})

    async def chunk_ids(self, chunk_id: int) -> list[str] | None:
        """The custom_ids an input chunk carries; None for a chunk recorded without them."""
        def q(c: Cursor) -> list[str] | None:
            row = c.execute("SELECT i.ids FROM chunk_ids i JOIN chunks k ON k.id = i.chunk_id"
                            " WHERE k.job_id=%s AND i.chunk_id=%s", (self.job_id, chunk_id)).fetchone()
            return orjson.loads(bytes(row[0])) if row else None
        return await self._run(q)

    @staticmethod
    def _put_ids(c: Cursor, chunk_id: int, ids: list[str]) -> None:
        c.execute("INSERT INTO chunk_ids VALUES (%s, %s) ON CONFLICT (chunk_id) DO UPDATE SET ids=excluded.ids",
                  (chunk_id, orjson.dumps(ids)))

    async def record_intent(self, *, kind: ChunkKind, take: int, nbytes: int, root_seq: int | None = None,
                            skip: int = 0, span: tuple[int, int, int, int, int] | None = None,
                            attempt: int = 1, est_cost: float = 0.0, chunk_id: int | None = None,
                            retry_ids: list[str] | None = None, skipped: list[tuple[int, int]] | None = None,
                            digest: str | None = None, ids: list[str] | None = None,
                            units: int | None = None, queue_key: str | None = None) -> int:
        """Write-ahead step 1. A new chunk row (or an existing one sent again) in state submitting, with its
        room in the shared budget (waiting for it while there is none)."""
        share, amount = budget.pool_for(self.share, queue_key, take, units)
        started = time.monotonic()

        def q(c: Cursor) -> int | None:
            now = time.time()
            if share is not None and not budget.reserve(c, share, self.job_id, chunk_id, amount):
                return None  # no room (or not this job's turn): the transaction keeps only the waiter row
            got = intent(c, now)
            if share is not None:
                budget.hold(c, share, self.job_id, got, amount)
            return got

        def intent(c: Cursor, now: float) -> int:
            if chunk_id is not None:
                c.execute("UPDATE chunks SET state=%s, intent_at=%s, nbytes=%s, est_cost=%s, units=%s, queue_key=%s"
                          " WHERE job_id=%s AND id=%s",
                          (ChunkState.SUBMITTING, now, nbytes, est_cost, units, queue_key, self.job_id, chunk_id))
                return chunk_id
            sf, sp, sl, ef, ep = span or (None, None, None, None, None)
            new_id = int(c.execute(
                "INSERT INTO chunks (job_id, kind, root_seq, skip, take, start_file, start_pos, start_line,"
                " end_file, end_pos, nbytes, state, attempt, intent_at, est_cost, skipped, digest, units, queue_key)"
                " VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s) RETURNING id",
                (self.job_id, kind, root_seq, skip, take, sf, sp, sl, ef, ep, nbytes, ChunkState.SUBMITTING, attempt,
                 now, est_cost, json.dumps(skipped) if skipped else None, digest, units, queue_key)).fetchone()[0])
            if retry_ids:
                c.executemany("UPDATE retries SET chunk_id=%s, state=%s WHERE job_id=%s AND custom_id=%s",
                              [(new_id, RetryState.ASSIGNED, self.job_id, cid) for cid in retry_ids])
            if ids is not None:
                self._put_ids(c, new_id, ids)
            return new_id

        while (got := await self._run(q)) is None:  # noqa: ASYNC110 - room comes back on other nodes: polled
            await asyncio.sleep(ROOM_POLL_S * random.uniform(0.5, 1.5))
        self.waited_s += time.monotonic() - started
        return got

    async def record_submitted(self, chunk_id: int, batch_id: str, *, adopted: bool = False) -> None:
        def q(c: Cursor) -> None:
            if adopted and c.execute("SELECT 1 FROM orphans WHERE job_id=%s AND batch_id=%s",
                                     (self.job_id, batch_id)).fetchone():
                # the node that made it gave it up (and cancels it) since adoption looked: the run stops and
                # resumes, sending the chunk again
                raise errors.Conflict(f"batch {batch_id} was given up by the node that created it; not adopted")
            c.execute("UPDATE chunks SET state=%s, batch_id=%s, adopted=%s, submitted_at=%s WHERE job_id=%s AND id=%s",
                      (ChunkState.SUBMITTED, batch_id, int(adopted), time.time(), self.job_id, chunk_id))
        await self._run(q)

    async def record_orphan(self, batch_id: str) -> bool:
        """A batch this node created after its claim was gone (the create was in the air across a pause, its
        id could not be written): marked nobody's, unless the job's owner has adopted it already, in one
        transaction holding the job's row (the owner's transactions hold it too, so the two never overlap).
        True: nobody will collect it, the caller cancels it. Not fenced: the claim is gone."""
        def q() -> bool:
            with self._db.transaction(), self._db.cursor() as c:
                c.execute("SELECT 1 FROM jobs WHERE id=%s FOR UPDATE", (self.job_id,))
                if c.execute("SELECT 1 FROM chunks WHERE job_id=%s AND batch_id=%s",
                             (self.job_id, batch_id)).fetchone():
                    return False  # the new owner adopted it: it is collected
                c.execute("INSERT INTO orphans (job_id, batch_id) VALUES (%s, %s) ON CONFLICT DO NOTHING",
                          (self.job_id, batch_id))
                return True
        try:
            return await asyncio.shield(asyncio.get_running_loop().run_in_executor(self._pool, q))
        except Exception as err:
            if pg.is_connection_error(err):
                return False  # cannot be marked: left alone (at worst paid, its results unused)
            raise

    async def set_state(self, chunk_id: int, state: ChunkState, note: str | None = None) -> None:
        def q(c: Cursor) -> None:
            c.execute("UPDATE chunks SET state=%s, note=COALESCE(%s, note) WHERE job_id=%s AND id=%s",
                      (state, note, self.job_id, chunk_id))
            if state in _FREES:
                budget.release(c, chunk_id)
        await self._run(q)

    async def set_note(self, chunk_id: int, note: str) -> None:
        await self._run(lambda c: c.execute("UPDATE chunks SET note=%s WHERE job_id=%s AND id=%s",
                                            (note, self.job_id, chunk_id)))

    async def disown(self, chunk_id: int, note: str) -> None:
        def q(c: Cursor) -> None:
            c.execute("UPDATE chunks SET state=%s, batch_id=NULL, adopted=0, note=%s WHERE job_id=%s AND id=%s",
                      (ChunkState.PLANNED, note, self.job_id, chunk_id))
            budget.release(c, chunk_id)
        await self._run(q)

    async def mark_ended(self, chunk_id: int, ended_at: float | None) -> None:
        """The batch ended at the provider: its room in the queue comes back."""
        def q(c: Cursor) -> None:
            c.execute("UPDATE chunks SET ended_at=COALESCE(ended_at, %s) WHERE job_id=%s AND id=%s",
                      (ended_at or time.time(), self.job_id, chunk_id))
            budget.release(c, chunk_id)
        await self._run(q)

    async def record_split(self, chunk_id: int, halves: list[tuple[int, int, int, list[str]]]) -> list[int]:
        def q(c: Cursor) -> list[int]:
            parent = self._select(c, "id=%s", (chunk_id,))[0]
            c.execute("UPDATE chunks SET state=%s WHERE job_id=%s AND id=%s", (ChunkState.SPLIT, self.job_id, chunk_id))
            budget.release(c, chunk_id)  # the halves take their own room when they are sent
            new_ids: list[int] = []
            for skip, take, nbytes, ids in halves:
                new_ids.append(int(c.execute(
                    "INSERT INTO chunks (job_id, kind, root_seq, skip, take, start_file, start_pos, start_line,"
                    " end_file, end_pos, nbytes, state, attempt, note, skipped, digest)"
                    " VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s) RETURNING id",
                    (self.job_id, parent.kind, parent.root_seq, skip, take, parent.start_file, parent.start_pos,
                     parent.start_line, parent.end_file, parent.end_pos, nbytes, ChunkState.PLANNED, parent.attempt,
                     f"split from {chunk_id}", parent.skipped, parent.digest)).fetchone()[0]))
                if parent.kind == ChunkKind.RETRY:
                    c.executemany("UPDATE retries SET chunk_id=%s WHERE job_id=%s AND custom_id=%s",
                                  [(new_ids[-1], self.job_id, cid) for cid in ids])
                else:
                    self._put_ids(c, new_ids[-1], ids)
            return new_ids
        return await self._run(q)

    # -- requests refused by the API at create time ----------------------------------------------

    async def record_api_rejected(self, root_seq: int | None, custom_id: str, message: str) -> None:
        def q(c: Cursor) -> None:
            c.execute("INSERT INTO api_rejected VALUES (%s, %s, %s, %s) ON CONFLICT (job_id, custom_id)"
                      " DO UPDATE SET root_seq=excluded.root_seq, message=excluded.message",
                      (self.job_id, custom_id, root_seq, message))
            c.execute("UPDATE retries SET state=%s, chunk_id=NULL WHERE job_id=%s AND custom_id=%s",
                      (RetryState.DONE, self.job_id, custom_id))
        await self._run(q)

    async def api_rejected(self, root_seq: int | None = None) -> dict[str, str]:
        if root_seq is None:
            return await self._run(lambda c: dict(c.execute(
                "SELECT custom_id, message FROM api_rejected WHERE job_id=%s", (self.job_id,)).fetchall()))
        return await self._run(lambda c: dict(c.execute(
            "SELECT custom_id, message FROM api_rejected WHERE job_id=%s AND root_seq=%s",
            (self.job_id, root_seq)).fetchall()))

    def read_api_rejected(self) -> dict[str, str]:
        """`api_rejected()` for a reader without an event loop (export), blocking."""
        return self.sync(lambda c: dict(c.execute(
            "SELECT custom_id, message FROM api_rejected WHERE job_id=%s", (self.job_id,)).fetchall()))

    # -- retries --------------------------------------------------------------------------------

    async def retry_requests(self, chunk_id: int) -> list[tuple[str, bytes, int]]:
        return await self._run(lambda c: [(cid, bytes(r), a) for cid, r, a in c.execute(
            "SELECT custom_id, request, attempts FROM retries WHERE job_id=%s AND chunk_id=%s ORDER BY custom_id",
            (self.job_id, chunk_id))])

    async def pending_retries(self, limit: int, now: float | None = None) -> list[tuple[str, bytes, int]]:
        """Up to `limit` pending requests whose wait is over (fewest attempts first)."""
        at = time.time() if now is None else now
        return await self._run(lambda c: [(cid, bytes(r), a) for cid, r, a in c.execute(
            "SELECT custom_id, request, attempts FROM retries WHERE job_id=%s AND state=%s AND not_before <= %s"
            " ORDER BY attempts, custom_id LIMIT %s", (self.job_id, RetryState.PENDING, at, limit))])

    async def next_retry_at(self) -> float | None:
        """When the next pending request's wait is over (epoch seconds), or None when none is pending."""
        return await self._run(lambda c: c.execute(
            "SELECT MIN(not_before) FROM retries WHERE job_id=%s AND state=%s",
            (self.job_id, RetryState.PENDING)).fetchone()[0])

    async def count_retries(self, state: RetryState) -> int:
        return await self._run(lambda c: int(c.execute(
            "SELECT COUNT(*) FROM retries WHERE job_id=%s AND state=%s", (self.job_id, state)).fetchone()[0]))

    async def requeue(self, state: RetryState) -> int:
        return await self._run(lambda c: c.execute(
            "UPDATE retries SET state=%s, chunk_id=NULL WHERE job_id=%s AND state=%s",
            (RetryState.PENDING, self.job_id, state)).rowcount)

    # -- collection -----------------------------------------------------------------------------

    def _offsets(self, c: Cursor, shards: int) -> list[int]:
        got = dict(c.execute('SELECT idx, "offset" FROM shards WHERE job_id=%s', (self.job_id,)).fetchall())
        return [int(got.get(i, 0)) for i in range(shards)]

    async def shard_offsets(self, shards: int) -> list[int]:
        return await self._run(lambda c: self._offsets(c, shards))

    def read_shard_offsets(self, shards: int) -> list[int]:
        """`shard_offsets()` for a reader without an event loop (export), blocking."""
        return self.sync(lambda c: self._offsets(c, shards))

    def _park(self, c: Cursor, park: list[tuple[str, bytes, int, RetryState, bytes | None]],
              wait: RetryWait | None = None, now: float = 0.0) -> None:
        wait = wait or RetryWait()
        if park:
            c.executemany(_PARK, [(self.job_id, cid, req, att, st, last, now + wait.after(att) if wait.first_s else 0.0)
                                  for cid, req, att, st, last in park])

    def _add(self, c: Cursor, counts: dict[str, float]) -> None:
        if counts:
            c.executemany(_ADD, [(self.job_id, k, v) for k, v in counts.items()])

    async def record_collected(self, chunk_id: int, *, offsets: list[int], counts: dict[str, float],
                               park: list[tuple[str, bytes, int, RetryState, bytes | None]], finals: list[str],
                               wait: RetryWait | None = None, now: float | None = None,
                               objects: list[tuple[str, int, int, int]] | None = None) -> None:
        """Write-ahead step 3: the result objects listed (their commit point), offsets, counts, parked (each
        waiting `wait.after(attempts)` before it is sent again)."""
        now = time.time() if now is None else now

        def q(c: Cursor) -> None:
            c.executemany('INSERT INTO shards VALUES (%s, %s, %s) ON CONFLICT (job_id, idx) DO UPDATE SET'
                          ' "offset" = excluded."offset"', [(self.job_id, i, o) for i, o in enumerate(offsets)])
            if objects:
                c.executemany("INSERT INTO result_objects VALUES (%s, %s, %s, %s, %s, %s)",
                              [(self.job_id, k, chunk_id, s, b, n) for k, s, b, n in objects])
            self._park(c, park, wait, now)
            if finals:
                c.executemany("UPDATE retries SET state=%s, chunk_id=NULL WHERE job_id=%s AND custom_id=%s",
                              [(RetryState.DONE, self.job_id, cid) for cid in finals])
            self._add(c, counts)
            c.execute("UPDATE chunks SET state=%s, collected_at=%s, ended_at=COALESCE(ended_at, %s)"
                      " WHERE job_id=%s AND id=%s", (ChunkState.COLLECTED, now, now, self.job_id, chunk_id))
            budget.release(c, chunk_id)
        await self._run(q)

    async def record_failed(self, chunk_id: int, *, park: list[tuple[str, bytes, int, RetryState, bytes]],
                            note: str | None) -> None:
        def q(c: Cursor) -> None:
            self._park(c, park)
            self._add(c, {"batches_failed": 1})
            c.execute("UPDATE chunks SET state=%s, note=COALESCE(%s, note) WHERE job_id=%s AND id=%s",
                      (ChunkState.FAILED, note, self.job_id, chunk_id))
            budget.release(c, chunk_id)
        await self._run(q)

    async def record_queue_full(self, chunk_id: int, note: str, *, counter: str, limits: dict[str, Any]) -> None:
        """The provider's queue was full for this chunk's batch: it waits to be sent again (its room in the
        shared budget comes back), the answer is counted and what admission learned kept, in one transaction."""
        def q(c: Cursor) -> None:
            c.execute("UPDATE chunks SET state=%s, note=%s WHERE job_id=%s AND id=%s",
                      (ChunkState.PLANNED, note, self.job_id, chunk_id))
            budget.release(c, chunk_id)
            self._add(c, {counter: 1})
            self._learned(c, limits)
        await self._run(q)

    async def record_queue_limits(self, doc: dict[str, Any]) -> None:
        await self._run(lambda c: self._learned(c, doc))

    async def add_counts(self, counts: dict[str, float]) -> None:
        await self._run(lambda c: self._add(c, counts))

    def _counters(self, c: Cursor) -> dict[str, float]:
        return dict(c.execute("SELECT name, value FROM counters WHERE job_id=%s", (self.job_id,)).fetchall())

    def counters(self) -> dict[str, float]:
        return self.sync(self._counters)

    async def acounters(self) -> dict[str, float]:
        return await self._run(self._counters)

    def each_retried_final(self, fn: Callable[[str, int], None]) -> None:
        """fn(custom_id, attempts before the final one) for each request sent again that is final now."""
        def q(c: Cursor) -> None:
            for cid, attempts in c.execute("SELECT custom_id, attempts FROM retries WHERE job_id=%s AND state=%s",
                                           (self.job_id, RetryState.DONE)):
                fn(cid, attempts)
        self.sync(q)

    def retry_counts(self) -> dict[RetryState, int]:
        return self.sync(lambda c: {RetryState(s): int(n) for s, n in c.execute(
            "SELECT state, COUNT(*) FROM retries WHERE job_id=%s GROUP BY state", (self.job_id,))})

    def result_objects(self) -> list[str]:
        return self.sync(lambda c: [k for (k,) in c.execute(
            "SELECT key FROM result_objects WHERE job_id=%s ORDER BY key", (self.job_id,))])
