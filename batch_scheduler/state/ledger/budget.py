"""The admission budget shared by every node: requests queued at the provider per (account, pool).

    budget(account, pool, limit_requests)           one row per account's queue (a hard cap)
    reservations(chunk_id, job_id, ..., requests)   what each batch in flight holds of it
    waiters(job_id, ..., weight, seen_at)           jobs that found no room, and their weight

A batch's room is taken in the same fenced transaction that records its create intent (base.py):
the pool's budget row is locked FOR UPDATE, so two nodes never both take the last room. The room comes
back when the batch ends at the provider (`mark_ended`), or when it turns out never to have been created
(planned again, dropped, failed, disowned).

Weighted fair shares in two levels, work-conserving: teams first, then the jobs of a team. While jobs
of other teams want room in the same pool (they asked within WAITING_S), a job takes room only if its
team holds no more of the pool than each of those teams (teams share equally, however many jobs each
runs); and while other jobs of its own team want room, only if it holds no more per unit of weight
(`submit --weight`) than each of them. So room goes to whoever holds least; a job alone, or whose
neighbours have nothing more to send (they stopped asking), may use it all. Jobs submitted without
`--team` are one team, "".

Pools: requests queued per account (anthropic, inline: the pool `requests`, a batch weighs its
requests), or estimated input tokens enqueued per model (openai: the pool `tokens:MODEL`, a batch
weighs its tokens, as issue 16's admission estimates them; the `requests` columns then hold tokens).
The limit is a hard cap given to the nodes (`--queue-limit`, or the hard caps of issue 16:
`--max-queued-requests`, `--max-enqueued-tokens`); what each node's admission learns of the
provider's limit stays that node's (docs/cluster.md).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from typing import Any

WAITING_S = 1.0  # a job that asked for room within this counts as wanting more (its next batch is coming)
REQUESTS_POOL = "requests"
TOKENS_POOL = "tokens"  # a Share's pool for enqueued tokens: one pool per model, `tokens:MODEL`


@dataclass(frozen=True)
class Share:
    """What a job draws on: its account's pool, the pool's limit, and the job's weight in it."""

    account: str
    pool: str
    limit: int
    weight: float = 1.0  # the job's weight among the jobs of its team
    team: str = ""  # teams share the pool equally, whatever their number of jobs


def account_of(provider: str, base_url: str | None, api_key: str) -> str:
    """One provider account, named without its key (a hash of it: the key itself is never stored)."""
    digest = hashlib.sha256(f"{provider}\0{base_url or ''}\0{api_key}".encode()).hexdigest()[:16]
    return f"{provider}:{digest}"


def pool_for(share: Share | None, queue_key: str | None, requests: int, units: int | None
             ) -> tuple[Share | None, int]:
    """The pool a batch draws on and what it weighs there: its requests, or (tokens) its estimated tokens
    in its model's pool."""
    if share is None or share.pool != TOKENS_POOL:
        return share, requests
    return replace(share, pool=f"{TOKENS_POOL}:{queue_key or ''}"), int(units if units is not None else requests)


def set_limit(db: Any, share: Share) -> None:
    db.execute("INSERT INTO budget (account, pool, limit_requests) VALUES (%s, %s, %s) ON CONFLICT (account, pool)"
               " DO UPDATE SET limit_requests = excluded.limit_requests", (share.account, share.pool, share.limit))


def reserve(c: Any, share: Share, job_id: int, chunk_id: int | None, requests: int) -> bool:
    """Take room for a batch (in the caller's transaction), or record the job as waiting and say no.

    chunk_id None: the room is checked only (the caller inserts the chunk, then `hold`s it).
    """
    if chunk_id is not None and c.execute("SELECT 1 FROM reservations WHERE chunk_id=%s", (chunk_id,)).fetchone():
        return True  # sent again after an unknown outcome: it holds its room already
    # the pool's row exists before it is locked (a model's pool is made by its first batch), so that two
    # nodes asking for the last room of a new pool still queue on one lock
    c.execute("INSERT INTO budget (account, pool, limit_requests) VALUES (%s, %s, %s) ON CONFLICT DO NOTHING",
              (share.account, share.pool, share.limit))
    row = c.execute("SELECT limit_requests FROM budget WHERE account=%s AND pool=%s FOR UPDATE",
                    (share.account, share.pool)).fetchone()
    limit = int(row[0]) if row and row[0] is not None else share.limit
    used = int(c.execute("SELECT COALESCE(SUM(requests), 0) FROM reservations WHERE account=%s AND pool=%s",
                         (share.account, share.pool)).fetchone()[0])
    mine = int(c.execute("SELECT COALESCE(SUM(requests), 0) FROM reservations WHERE job_id=%s AND account=%s"
                         " AND pool=%s", (job_id, share.account, share.pool)).fetchone()[0])
    others = c.execute(  # waiting jobs of this team: what each holds
        "SELECT w.weight, COALESCE((SELECT SUM(r.requests) FROM reservations r WHERE r.job_id = w.job_id"
        " AND r.account = w.account AND r.pool = w.pool), 0) FROM waiters w WHERE w.account=%s AND w.pool=%s"
        " AND w.team = %s AND w.job_id <> %s AND w.seen_at > clock_timestamp() - make_interval(secs => %s)",
        (share.account, share.pool, share.team, job_id, WAITING_S)).fetchall()
    teams = c.execute(  # other teams with a job waiting: what each team holds in all
        "SELECT t.team, COALESCE((SELECT SUM(r.requests) FROM reservations r WHERE r.account=%s AND r.pool=%s"
        " AND r.team = t.team), 0) FROM (SELECT DISTINCT team FROM waiters WHERE account=%s AND pool=%s"
        " AND team <> %s AND seen_at > clock_timestamp() - make_interval(secs => %s)) t",
        (share.account, share.pool, share.account, share.pool, share.team, WAITING_S)).fetchall()
    ours = int(c.execute("SELECT COALESCE(SUM(requests), 0) FROM reservations WHERE account=%s AND pool=%s"
                         " AND team=%s", (share.account, share.pool, share.team)).fetchone()[0])
    fair = (all(ours <= int(held) for _, held in teams)
            and all(mine / share.weight <= float(held) / float(weight) for weight, held in others))
    room = used + requests <= limit or (used == 0 and mine == 0)  # a batch larger than the limit still goes alone
    # a job that asks is wanting, whether it gets room now or not: its next batch follows this one, and
    # while it keeps asking the others leave it the room it is owed (after WAITING_S it is not counted)
    c.execute("INSERT INTO waiters (job_id, account, pool, weight, team) VALUES (%s, %s, %s, %s, %s)"
              " ON CONFLICT (job_id) DO UPDATE SET seen_at=clock_timestamp(), weight=excluded.weight,"
              " account=excluded.account, pool=excluded.pool, team=excluded.team",
              (job_id, share.account, share.pool, share.weight, share.team))
    return room and fair


def hold(c: Any, share: Share, job_id: int, chunk_id: int, requests: int) -> None:
    c.execute("INSERT INTO reservations (chunk_id, job_id, account, pool, requests, weight, team) VALUES"
              " (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (chunk_id) DO NOTHING",
              (chunk_id, job_id, share.account, share.pool, requests, share.weight, share.team))


def release(c: Any, chunk_id: int) -> None:
    c.execute("DELETE FROM reservations WHERE chunk_id=%s", (chunk_id,))


def queued(db: Any, account: str, pool: str = REQUESTS_POOL) -> int:
    return int(db.execute("SELECT COALESCE(SUM(requests), 0) FROM reservations WHERE account=%s AND pool=%s",
                          (account, pool)).fetchone()[0])
