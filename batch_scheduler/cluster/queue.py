"""The cluster's job queue in PostgreSQL: submit, claim under a lease, renew, settle, cancel, status.

    queued --claim--> running --(its run ends)--> done | failed | cancelled
      ^                 |  \\--> queued (stopped on an error: claimable again after a wait)
      |                 \\----> paused (the key was refused, the provider's spend limit reached, or the
      |                          disk full: claimable again after --key-check-s, and its run re-checks;
      |                          `status` shows it paused, with the reason)
      \\---- a running job whose lease ran out is claimable as it is (an orphan)

A claim is one statement: the oldest claimable job, locked `FOR UPDATE SKIP LOCKED` (nodes never wait
for each other), gets a new random token and `lease_until = clock_timestamp() + lease` — the
database's clock, so the nodes' clocks do not matter. A renewal, and every settle, only succeeds for
the token it names (see state/ledger/postgres.py for the fence every ledger transaction checks).
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from batch_scheduler.core import errors
from batch_scheduler.state.ledger import pg
from batch_scheduler.state.ledger.queries import load

T = TypeVar("T")

STATES = ("queued", "running", "paused", "done", "failed", "cancelled")
FINAL = ("done", "failed", "cancelled")

Q = load("queue")  # the statements, named, in state/ledger/sql/queue.sql


@dataclass
class Claimed:
    job_id: int
    name: str
    spec: dict[str, Any]
    token: str
    cancel_requested: bool
    claims: int
    restarts: int


class Queue:
    """One connection to the queue, used from a thread of its own (blocking callers use `sync`)."""

    def __init__(self, url: str):
        self.url = url
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pg-queue")
        self._db: Any = None

    def _conn(self) -> Any:
        if self._db is None or self._db.closed or self._db.broken:
            if self._db is not None:
                self._db.close()
            self._db = pg.connect(self.url, autocommit=True)
        return self._db

    def _do(self, fn: Callable[[Any], T]) -> T:
        try:
            db = self._conn()
            with db.transaction():
                return fn(db)
        except errors.SchedulerError:
            raise
        except Exception as err:
            if pg.is_connection_error(err):
                if self._db is not None:
                    self._db.close()
                    self._db = None
                raise pg.unavailable(self.url, err) from None
            raise

    def sync(self, fn: Callable[[Any], T]) -> T:
        return self._pool.submit(self._do, fn).result()

    async def run(self, fn: Callable[[Any], T]) -> T:
        loop = asyncio.get_running_loop()
        return await asyncio.shield(loop.run_in_executor(self._pool, self._do, fn))

    def close(self) -> None:
        def shut() -> None:
            if self._db is not None:
                self._db.close()
        self._pool.submit(shut).result()
        self._pool.shutdown(wait=True)

    # -- commands -------------------------------------------------------------------------------

    def submit(self, name: str, spec: dict[str, Any]) -> int:
        """A new queued job; UsageError if the name, or the output, is another job's (any job's, finished
        or not: a finished output is never reused). Submits to one output take turns (a lock held to the
        end of the transaction), so two of them never both pass the check."""
        out = str(spec["out"]).rstrip("/")

        def q(db: Any) -> int:
            db.execute(Q["lock_output"], {"out": out})
            if db.execute(Q["named"], {"name": name}).fetchone():
                raise errors.UsageError(f"a job named {name!r} exists already; choose another --name")
            other = db.execute(Q["output_owner"], {"out": out}).fetchone()
            if other and other[1] not in FINAL:
                raise errors.UsageError(f"--out {spec['out']} belongs to job {other[0]!r}, which is not finished")
            if other:
                raise errors.UsageError(f"--out {spec['out']} belongs to job {other[0]!r}, which is {other[1]}: an "
                                        f"output is never reused, not even a finished one; choose another --out")
            return int(db.execute(Q["submit"], {"name": name, "spec": json.dumps(spec)}).fetchone()[0])
        try:
            return self.sync(q)
        except Exception as err:
            if type(err).__name__ == "UniqueViolation":  # the same name submitted at the same moment
                raise errors.UsageError(f"a job named {name!r} exists already; choose another --name") from None
            raise

    def cancel(self, name: str) -> str:
        """Mark the job cancelled: a queued job with nothing in flight is cancelled at once; one that runs
        (or has batches at the provider) is cancelled by the node that runs it. Returns its state."""
        def q(db: Any) -> str:
            row = db.execute(Q["hold_named"], {"name": name}).fetchone()
            if row is None:
                raise errors.UsageError(f"no job named {name!r}")
            job_id, state = row
            if state in FINAL:
                return state
            db.execute(Q["cancel_requested"], {"job_id": job_id})
            in_flight = db.execute(Q["in_flight"], {"job_id": job_id}).fetchone()
            if state in ("queued", "paused") and not in_flight:
                db.execute(Q["cancel_now"], {"job_id": job_id})
                return "cancelled"
            return state
        return self.sync(q)

    def status(self, name: str | None = None) -> list[dict[str, Any]]:
        def q(db: Any) -> list[dict[str, Any]]:
            return [_status_row(*r) for r in db.execute(Q["status"], {"name": name}).fetchall()]
        out = self.sync(q)
        if name is not None and not out:
            raise errors.UsageError(f"no job named {name!r}")
        return out

    def batches_of_others(self, job_id: int, since: float) -> set[str]:
        """The batch ids every job but `job_id` records since `since` (blocking): never adopted by it."""
        return self.sync(lambda db: {r[0] for r in db.execute(Q["batches_of_others"],
                                                              {"job_id": job_id, "since": since}).fetchall()})

    # -- the node's side ------------------------------------------------------------------------

    async def register(self, node_id: str, listen: str | None) -> None:
        await self.run(lambda db: db.execute(Q["register"], {"node": node_id, "listen": listen}))

    async def heartbeat(self, node_id: str) -> None:
        await self.run(lambda db: db.execute(Q["heartbeat"], {"node": node_id}))

    async def claim(self, node_id: str, lease_s: float, *, running: int = 0, live_s: float = 3.0) -> Claimed | None:
        """The oldest claimable job, unless another live node (seen within live_s) runs fewer jobs than
        this one: then it is left to that node, so the jobs spread over the nodes."""
        token = secrets.token_hex(16)

        def q(db: Any) -> Claimed | None:
            fewest = db.execute(Q["fewest"], {"node": node_id, "live_s": live_s}).fetchone()[0]
            if fewest is not None and int(fewest) < running:
                return None
            row = db.execute(Q["claim"], {"token": token, "node": node_id, "lease": lease_s}).fetchone()
            if row is None:
                return None
            job_id, name, spec, cancel, claims, restarts = row
            return Claimed(int(job_id), name, spec, token, bool(cancel), int(claims), int(restarts))
        return await self.run(q)

    async def renew(self, job_id: int, token: str, lease_s: float) -> tuple[bool, bool]:
        """(still ours, cancel requested): the lease moved to now + lease_s, if the claim is still ours."""
        def q(db: Any) -> tuple[bool, bool]:
            row = db.execute(Q["renew"], {"lease": lease_s, "job_id": job_id, "token": token}).fetchone()
            return (row is not None, bool(row and row[0]))
        return await self.run(q)

    async def settle(self, job_id: int, token: str, state: str, reason: str | None, *,
                     wait_s: float | None = None, restarts: int | None = None) -> bool:
        """Give the claim up with the job's next state; False if the claim was no longer ours."""
        params = {"state": state, "reason": reason, "wait_s": wait_s, "restarts": restarts, "job_id": job_id,
                  "token": token}
        return await self.run(lambda db: db.execute(Q["settle"], params).fetchone() is not None)


def _status_row(job_id: int, name: str, state: str, reason: str | None, node: str | None, spec: dict,
                cancel: bool, claims: int, lease_left: Any, submitted: Any, updated: Any, counters: dict,
                accepted: Any) -> dict[str, Any]:
    finished = int(sum(counters.get(k, 0) for k in ("succeeded", "errored", "expired", "canceled")))
    return {"name": name, "state": state, "reason": reason, "node": node, "out": spec.get("out"),
            "inputs": spec.get("inputs"), "cancel_requested": cancel, "claims": claims,
            "lease_left_s": round(float(lease_left), 1) if lease_left is not None else None,
            "submitted_at": float(submitted), "updated_at": float(updated),
            "requests": {"accepted": int(accepted) if accepted is not None else None, "finished": finished,
                         "succeeded": int(counters.get("succeeded", 0)), "errored": int(counters.get("errored", 0)),
                         "expired": int(counters.get("expired", 0))},
            "batches_created": int(counters.get("batches_created", 0)),
            "cost_usd": round(float(counters.get("cost_usd", 0.0)), 6)}
