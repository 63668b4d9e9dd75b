"""One cluster job's ledger in PostgreSQL: the `Ledger` interface over the tables keyed by job.

The job layer runs over either backend unchanged: the write-ahead order (state/ledger/base.py) and the
recipes (recipes.py) are the SQLite ledger's, over the statements of sql/postgres.sql. What is added is
the fence. Every transaction first locks the job's row and checks that it still carries this node's
claim token and an unexpired lease (the database's clock, statement `fence`). A claim by another node
takes the same row FOR UPDATE and writes a new token, so once it has committed, every transaction of
the old claim rolls back and raises `LeaseLost`: a stale node writes nothing. A dropped connection
raises `LedgerUnavailable`: the outcome of that transaction is unknown, as after a crash, so the node
drops the job and whoever claims it resumes from the ledger.

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
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from batch_scheduler.core import errors
from batch_scheduler.state.ledger import budget, pg
from batch_scheduler.state.ledger.queries import statements
from batch_scheduler.state.ledger.recipes import Intent, SqlLedger
from batch_scheduler.state.ledger.rows import ChunkRow

T = TypeVar("T")
Cursor = Any

ROOM_POLL_S = 0.1  # how often a job waiting for room in the shared budget looks again


class PgLedger(SqlLedger):
    """The ledger of job `job_id` for the claim `token` (None: read-only use, no fence)."""

    def __init__(self, url: str, job_id: int, token: str | None, *, name: str = ""):
        self.url = url
        self.job_id = job_id
        self.token = token
        self.name = name or str(job_id)
        self.key: dict[str, Any] = {"job_id": job_id}
        self.q = statements("postgres", ", ".join(ChunkRow.__dataclass_fields__))
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

    async def _run(self, fn: Callable[[Cursor], T], *, checkpoint: bool = False) -> T:
        loop = asyncio.get_running_loop()
        return await asyncio.shield(loop.run_in_executor(self._pool, self._tx, fn))

    def _tx(self, fn: Callable[[Cursor], T]) -> T:
        if self.fenced:
            raise self._lost()
        try:
            with self._db.transaction(), self._db.cursor() as cur:
                if self.token is not None:
                    if not self._all(cur, "fence", token=self.token):
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

    def sync(self, fn: Callable[[Cursor], T], *, checkpoint: bool = False) -> T:
        return self._pool.submit(self._tx, fn).result()

    def _read(self, fn: Callable[[Cursor], T]) -> T:
        return self.sync(fn)  # fenced too: a claim that is gone reads nothing either

    # -- this backend's own steps of the shared recipes ------------------------------------------

    def _meta_value(self, value: Any) -> Any:
        return value  # jsonb: read as what was written

    def _states(self, states: tuple[str, ...]) -> Any:
        return list(states)

    def _release(self, c: Cursor, chunk_id: int) -> None:
        budget.release(c, chunk_id)

    def _learned(self, c: Cursor, limits: dict[str, Any]) -> None:
        """Admission's learned state, as the job keeps it, and for every job of the account."""
        self._write_meta(c, {"queue_limits": limits})
        if self.account and isinstance(limits, dict):
            c.executemany(self.q["learn"], [{"account": self.account, "queue_key": k, "doc": json.dumps(v)}
                                            for k, v in limits.items()])

    def _check_adoption(self, c: Cursor, batch_id: str) -> None:
        if self._all(c, "is_orphan", batch_id=batch_id):
            # the node that made it gave it up (and cancels it) since adoption looked: the run stops and
            # resumes, sending the chunk again
            raise errors.Conflict(f"batch {batch_id} was given up by the node that created it; not adopted")

    async def _with_room(self, intent: Intent) -> int:
        """The intent with its room in the shared budget, waiting for room while there is none."""
        share, amount = budget.pool_for(self.share, intent.queue_key, intent.take, intent.units)
        started = time.monotonic()

        def q(c: Cursor) -> int | None:
            if share is not None and not budget.reserve(c, share, self.job_id, intent.chunk_id, amount):
                return None  # no room (or not this job's turn): the transaction keeps only the waiter row
            got = self._intent(c, intent, time.time())
            if share is not None:
                budget.hold(c, share, self.job_id, got, amount)
            return got

        while (got := await self._run(q)) is None:  # noqa: ASYNC110 - room comes back on other nodes: polled
            await asyncio.sleep(ROOM_POLL_S * random.uniform(0.5, 1.5))
        self.waited_s += time.monotonic() - started
        return got

    # -- what only this backend has ---------------------------------------------------------------

    def read_queue_limits(self) -> Any:
        """What admission learned of the provider's queues: the job's own, overlaid by what any job of the
        same account learned since (`learned`), so a job starting on any node starts from the account's."""
        def q(c: Cursor) -> Any:
            rows = self._all(c, "own_queue_limits")
            own = rows[0][0] if rows and isinstance(rows[0][0], dict) else {}
            shared = dict(self._all(c, "learned", account=self.account)) if self.account else {}
            return {**own, **shared} or None
        return self.sync(q)

    async def is_cancelled(self) -> bool:
        """`cancel --ledger URL NAME` marks the job's row; a run asks before every batch."""
        return await self._run(lambda c: bool(self._all(c, "is_cancelled")[0][0]))

    async def set_cancelled(self, cancelled: bool) -> None:
        def q(c: Cursor) -> None:
            c.execute(self.q["set_cancelled"], self._p(cancelled=cancelled))
        await self._run(q)

    async def record_orphan(self, batch_id: str) -> bool:
        """A batch this node created after its claim was gone (the create was in the air across a pause, its
        id could not be written): marked nobody's, unless the job's owner has adopted it already, in one
        transaction holding the job's row (the owner's transactions hold it too, so the two never overlap).
        True: nobody will collect it, the caller cancels it. Not fenced: the claim is gone."""
        def q() -> bool:
            with self._db.transaction(), self._db.cursor() as c:
                c.execute(self.q["hold_job"], self.key)
                if self._all(c, "has_batch", batch_id=batch_id):
                    return False  # the new owner adopted it: it is collected
                c.execute(self.q["put_orphan"], self._p(batch_id=batch_id))
                return True
        try:
            return await asyncio.shield(asyncio.get_running_loop().run_in_executor(self._pool, q))
        except Exception as err:
            if pg.is_connection_error(err):
                return False  # cannot be marked: left alone (at worst paid, its results unused)
            raise
