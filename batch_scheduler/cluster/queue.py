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
the token it names (see ledger.py for the fence every ledger transaction checks).
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
from batch_scheduler.state import pg

T = TypeVar("T")

STATES = ("queued", "running", "paused", "done", "failed", "cancelled")
FINAL = ("done", "failed", "cancelled")

_CLAIM = """
UPDATE jobs SET state='running', claim_token=%(token)s, node_id=%(node)s,
       lease_until=clock_timestamp() + make_interval(secs => %(lease)s), claims=claims+1, updated_at=now()
WHERE id = (SELECT id FROM jobs
            WHERE (state IN ('queued', 'paused') OR (state = 'running' AND lease_until < clock_timestamp()))
              AND (not_before IS NULL OR not_before <= clock_timestamp())
            ORDER BY submitted_at, id LIMIT 1 FOR UPDATE SKIP LOCKED)
RETURNING id, name, spec, cancel_requested, claims, restarts
"""

_FEWEST = """
SELECT MIN((SELECT count(*) FROM jobs j WHERE j.node_id = n.node_id AND j.state = 'running'
                                       AND j.lease_until > clock_timestamp()))
FROM nodes n WHERE n.node_id <> %s AND n.seen_at > clock_timestamp() - make_interval(secs => %s)
"""


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
        """A new queued job; UsageError if the name, or the output, is another job's."""
        def q(db: Any) -> int:
            if db.execute("SELECT 1 FROM jobs WHERE name=%s", (name,)).fetchone():
                raise errors.UsageError(f"a job named {name!r} exists already; choose another --name")
            other = db.execute("SELECT name FROM jobs WHERE spec->>'out' = %s AND state <> ALL(%s)",
                               (spec["out"], list(FINAL))).fetchone()
            if other:
                raise errors.UsageError(f"--out {spec['out']} belongs to job {other[0]!r}, which is not finished")
            return int(db.execute("INSERT INTO jobs (name, state, spec) VALUES (%s, 'queued', %s::jsonb) RETURNING id",
                                  (name, json.dumps(spec))).fetchone()[0])
        return self.sync(q)

    def cancel(self, name: str) -> str:
        """Mark the job cancelled: a queued job with nothing in flight is cancelled at once; one that runs
        (or has batches at the provider) is cancelled by the node that runs it. Returns its state."""
        def q(db: Any) -> str:
            row = db.execute("SELECT id, state FROM jobs WHERE name=%s FOR UPDATE", (name,)).fetchone()
            if row is None:
                raise errors.UsageError(f"no job named {name!r}")
            job_id, state = row
            if state in FINAL:
                return state
            db.execute("UPDATE jobs SET cancel_requested=TRUE, updated_at=now() WHERE id=%s", (job_id,))
            in_flight = db.execute("SELECT 1 FROM chunks WHERE job_id=%s AND state IN ('submitted', 'submitting')"
                                   " LIMIT 1", (job_id,)).fetchone()
            if state in ("queued", "paused") and not in_flight:
                db.execute("UPDATE jobs SET state='cancelled', reason='cancelled before it ran',"
                           " claim_token=NULL, node_id=NULL, lease_until=NULL WHERE id=%s", (job_id,))
                return "cancelled"
            return state
        return self.sync(q)

    def status(self, name: str | None = None) -> list[dict[str, Any]]:
        def q(db: Any) -> list[dict[str, Any]]:
            rows = db.execute(
                "SELECT j.id, j.name, j.state, j.reason, j.node_id, j.spec, j.cancel_requested, j.claims,"
                " CASE WHEN j.state='running' THEN EXTRACT(EPOCH FROM j.lease_until - clock_timestamp()) END,"
                " EXTRACT(EPOCH FROM j.submitted_at), EXTRACT(EPOCH FROM j.updated_at),"
                " COALESCE((SELECT jsonb_object_agg(c.name, c.value) FROM counters c WHERE c.job_id=j.id), '{}'),"
                " (SELECT value FROM meta m WHERE m.job_id=j.id AND m.key='accepted_total')"
                " FROM jobs j WHERE (%s::text IS NULL OR j.name=%s) ORDER BY j.submitted_at, j.id",
                (name, name)).fetchall()
            return [_status_row(*r) for r in rows]
        out = self.sync(q)
        if name is not None and not out:
            raise errors.UsageError(f"no job named {name!r}")
        return out

    # -- the node's side ------------------------------------------------------------------------

    async def register(self, node_id: str, listen: str | None) -> None:
        await self.run(lambda db: db.execute(
            "INSERT INTO nodes (node_id, listen) VALUES (%s, %s) ON CONFLICT (node_id) DO UPDATE SET"
            " started_at=now(), seen_at=now(), listen=excluded.listen", (node_id, listen)))

    async def heartbeat(self, node_id: str) -> None:
        await self.run(lambda db: db.execute("UPDATE nodes SET seen_at=now() WHERE node_id=%s", (node_id,)))

    async def claim(self, node_id: str, lease_s: float, *, running: int = 0, live_s: float = 3.0) -> Claimed | None:
        """The oldest claimable job, unless another live node (seen within live_s) runs fewer jobs than
        this one: then it is left to that node, so the jobs spread over the nodes."""
        token = secrets.token_hex(16)

        def q(db: Any) -> Claimed | None:
            fewest = db.execute(_FEWEST, (node_id, live_s)).fetchone()[0]
            if fewest is not None and int(fewest) < running:
                return None
            row = db.execute(_CLAIM, {"token": token, "node": node_id, "lease": lease_s}).fetchone()
            if row is None:
                return None
            job_id, name, spec, cancel, claims, restarts = row
            return Claimed(int(job_id), name, spec, token, bool(cancel), int(claims), int(restarts))
        return await self.run(q)

    async def renew(self, job_id: int, token: str, lease_s: float) -> tuple[bool, bool]:
        """(still ours, cancel requested): the lease moved to now + lease_s, if the claim is still ours."""
        def q(db: Any) -> tuple[bool, bool]:
            row = db.execute("UPDATE jobs SET lease_until=clock_timestamp() + make_interval(secs => %s)"
                             " WHERE id=%s AND claim_token=%s AND lease_until > clock_timestamp()"
                             " RETURNING cancel_requested", (lease_s, job_id, token)).fetchone()
            return (row is not None, bool(row and row[0]))
        return await self.run(q)

    async def settle(self, job_id: int, token: str, state: str, reason: str | None, *,
                     wait_s: float | None = None, restarts: int | None = None) -> bool:
        """Give the claim up with the job's next state; False if the claim was no longer ours."""
        def q(db: Any) -> bool:
            row = db.execute(
                "UPDATE jobs SET state=%s, reason=%s, claim_token=NULL, node_id=NULL, lease_until=NULL,"
                " not_before = CASE WHEN %s::float8 IS NULL THEN NULL"
                "                   ELSE clock_timestamp() + make_interval(secs => %s::float8) END,"
                " restarts=COALESCE(%s, restarts), updated_at=now() WHERE id=%s AND claim_token=%s RETURNING id",
                (state, reason, wait_s, wait_s, restarts, job_id, token)).fetchone()
            return row is not None
        return await self.run(q)


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
