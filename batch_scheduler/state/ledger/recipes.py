"""Every state change both ledgers make the same way, written once over each backend's named statements.

A recipe is which statements run, in which order, in one transaction (the order itself is stated in
state/ledger/base.py). The statements come from sql/<dialect>.sql (`queries`), all with named parameters,
and each is given the backend's key (`key`: the job's id in PostgreSQL, nothing in SQLite) with its own
values. A backend supplies the plumbing (`_run`, `sync`, `_read`: one transaction, or one blocking read,
on the ledger's own thread) and the few steps that are its own: what a meta value looks like once read,
room in a shared budget held and given back (`_release`), what admission learned shared (`_learned`),
a check before an adopted batch is recorded (`_check_adoption`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, NamedTuple, TypeVar

import orjson

from batch_scheduler.state.ledger.rows import (
    _OLD_CANCELLED,
    ChunkKind,
    ChunkRow,
    ChunkState,
    RetryState,
    RetryWait,
)

T = TypeVar("T")
Park = Sequence[tuple[str, bytes, int, RetryState, bytes | None]]  # custom_id, request, attempts, state, last line


class Intent(NamedTuple):
    """What `record_intent` writes (its arguments, as one value)."""

    kind: ChunkKind
    take: int
    nbytes: int
    root_seq: int | None
    skip: int
    span: tuple[int, int, int, int, int] | None
    attempt: int
    est_cost: float
    chunk_id: int | None
    retry_ids: list[str] | None
    skipped: list[tuple[int, int]] | None
    digest: str | None
    ids: list[str] | None
    units: int | None
    queue_key: str | None


class SqlLedger:
    """The shared body of `SqliteLedger` and `PgLedger` (see state/ledger/base.py for the interface)."""

    q: dict[str, str]  # the backend's statements by name
    key: dict[str, Any]  # parameters every statement is given (PostgreSQL: the job's id)

    # -- what a backend supplies ------------------------------------------------------------------

    def _run(self, fn: Callable[[Any], T], *, checkpoint: bool = False) -> Awaitable[T]:
        raise NotImplementedError

    def sync(self, fn: Callable[[Any], T], *, checkpoint: bool = False) -> T:
        raise NotImplementedError

    def _read(self, fn: Callable[[Any], T]) -> T:
        raise NotImplementedError

    def _meta_value(self, value: Any) -> Any:
        return json.loads(value)

    def _release(self, c: Any, chunk_id: int) -> None:
        """The chunk's batch holds no room in a shared budget any more (none in SQLite)."""

    def _learned(self, c: Any, limits: dict[str, Any]) -> None:
        self._write_meta(c, {"queue_limits": limits})

    def _check_adoption(self, c: Any, batch_id: str) -> None:
        """Before an adopted batch is recorded as this job's (nothing to check in SQLite)."""

    def _states(self, states: tuple[str, ...]) -> Any:
        return json.dumps(list(states))

    async def _with_room(self, intent: Intent) -> int:
        return await self._run(lambda c: self._intent(c, intent, time.time()))

    # -- helpers ----------------------------------------------------------------------------------

    def _p(self, **values: Any) -> dict[str, Any]:
        return {**self.key, **values}

    def _all(self, c: Any, name: str, **values: Any) -> list[Any]:
        return c.execute(self.q[name], self._p(**values)).fetchall()

    def _rows(self, rows: Iterable[tuple]) -> list[ChunkRow]:
        return [ChunkRow(*r) for r in rows]

    def _write_meta(self, c: Any, values: dict[str, Any]) -> None:
        c.executemany(self.q["write_meta"], [self._p(key=k, value=json.dumps(v)) for k, v in values.items()])

    def _add(self, c: Any, counts: dict[str, float]) -> None:
        if counts:
            c.executemany(self.q["add_count"], [self._p(name=k, value=v) for k, v in counts.items()])

    def _offsets(self, c: Any, shards: int) -> list[int]:
        got = dict(self._all(c, "offsets"))
        return [int(got.get(i, 0)) for i in range(shards)]

    def _park(self, c: Any, park: Park, wait: RetryWait | None = None, now: float = 0.0) -> None:
        wait = wait or RetryWait()
        if park:
            c.executemany(self.q["park"], [self._p(
                custom_id=cid, request=req, attempts=att, state=st, last_line=last,
                not_before=now + wait.after(att) if wait.first_s else 0.0) for cid, req, att, st, last in park])

    def _counters(self, c: Any) -> dict[str, float]:
        return dict(self._all(c, "counters"))

    # -- job identity ---------------------------------------------------------------------------

    def read_meta(self) -> dict[str, Any]:
        return self._read(lambda c: {k: self._meta_value(v) for k, v in self._all(c, "read_meta")})

    def read_queue_limits(self) -> Any:
        """What admission learned of the provider's queues (`record_queue_limits`), for a run to start from."""
        return self.read_meta().get("queue_limits")

    def write_meta(self, values: dict[str, Any]) -> None:
        self.sync(lambda c: self._write_meta(c, values), checkpoint=True)

    async def record_accepted_total(self, n: int) -> None:
        """Every input line has been read: how many requests the job has (`status` counts what is to go)."""
        await self._run(lambda c: self._write_meta(c, {"accepted_total": n}))

    # -- chunks ---------------------------------------------------------------------------------

    async def chunks_of_root(self, seq: int) -> list[ChunkRow]:
        return await self._run(lambda c: self._rows(self._all(c, "chunks_of_root", seq=seq)))

    async def chunks_in(self, *states: str) -> list[ChunkRow]:
        return await self._run(lambda c: self._rows(self._all(c, "chunks_in", states=self._states(states))))

    async def chunk(self, chunk_id: int) -> ChunkRow:
        return await self._run(lambda c: self._rows(self._all(c, "chunk", id=chunk_id))[0])

    def all_chunks(self) -> list[ChunkRow]:
        return self._read(lambda c: self._rows(self._all(c, "all_chunks")))

    async def claimed_batch_ids(self) -> set[str]:
        """The job's batch ids (and in PostgreSQL those a stale node gave up): none is to be adopted."""
        return await self._run(lambda c: {r[0] for r in self._all(c, "claimed_batch_ids")})

    def batch_ids_since(self, since: float) -> set[str]:
        """Batch ids this job recorded at or after `since` (blocking; another job's adoption asks)."""
        return self._read(lambda c: {r[0] for r in self._all(c, "batch_ids_since", since=since)})

    async def record_intent(self, *, kind: ChunkKind, take: int, nbytes: int, root_seq: int | None = None,
                            skip: int = 0, span: tuple[int, int, int, int, int] | None = None,
                            attempt: int = 1, est_cost: float = 0.0, chunk_id: int | None = None,
                            retry_ids: list[str] | None = None, skipped: list[tuple[int, int]] | None = None,
                            digest: str | None = None, ids: list[str] | None = None,
                            units: int | None = None, queue_key: str | None = None) -> int:
        """Write-ahead step 1: a new chunk row (or an existing one sent again) in state submitting, not yet at
        its create call (`record_creating` marks that)."""
        return await self._with_room(Intent(kind, take, nbytes, root_seq, skip, span, attempt, est_cost, chunk_id,
                                            retry_ids, skipped, digest, ids, units, queue_key))

    def _intent(self, c: Any, i: Intent, now: float) -> int:
        if i.chunk_id is not None:
            # `take` stays: it places the chunk in its root; what is sent may be fewer (refusals)
            c.execute(self.q["intent_again"], self._p(state=ChunkState.SUBMITTING, now=now, nbytes=i.nbytes,
                                                      est_cost=i.est_cost, units=i.units, queue_key=i.queue_key,
                                                      id=i.chunk_id))
            return i.chunk_id
        sf, sp, sl, ef, ep = i.span or (None, None, None, None, None)
        (row,) = self._all(c, "intent_new", kind=i.kind, root_seq=i.root_seq, skip=i.skip, take=i.take,
                           start_file=sf, start_pos=sp, start_line=sl, end_file=ef, end_pos=ep, nbytes=i.nbytes,
                           state=ChunkState.SUBMITTING, attempt=i.attempt, now=now, est_cost=i.est_cost,
                           skipped=json.dumps(i.skipped) if i.skipped else None, digest=i.digest, units=i.units,
                           queue_key=i.queue_key)
        new_id = int(row[0])
        if i.retry_ids:
            c.executemany(self.q["assign_retry"], [self._p(chunk_id=new_id, state=RetryState.ASSIGNED, custom_id=cid)
                                                   for cid in i.retry_ids])
        if i.ids is not None:
            c.execute(self.q["put_ids"], self._p(chunk_id=new_id, ids=orjson.dumps(i.ids)))
        return new_id

    async def chunk_ids(self, chunk_id: int) -> list[str] | None:
        """The custom_ids an input chunk carries; None for a chunk recorded without them (an earlier version)."""
        def q(c: Any) -> list[str] | None:
            rows = self._all(c, "chunk_ids", chunk_id=chunk_id)
            return orjson.loads(bytes(rows[0][0])) if rows else None
        return await self._run(q)

    async def record_creating(self, chunk_id: int) -> float:
        """Write-ahead step 2: the chunk's create call is about to be sent (the time it was, returned). Only a
        chunk so marked may have made a batch its ledger does not know: a run after a crash looks for it."""
        now = time.time()

        def q(c: Any) -> None:
            c.execute(self.q["creating"], self._p(now=now, id=chunk_id, state=ChunkState.SUBMITTING))
        await self._run(q, checkpoint=True)
        return now

    async def record_submitted(self, chunk_id: int, batch_id: str, *, adopted: bool = False) -> None:
        """Write-ahead step 3: the batch id, the moment create returned (or the batch was adopted)."""
        def q(c: Any) -> None:
            if adopted:
                self._check_adoption(c, batch_id)
            c.execute(self.q["submitted"], self._p(state=ChunkState.SUBMITTED, batch_id=batch_id, adopted=int(adopted),
                                                   now=time.time(), id=chunk_id))
        await self._run(q, checkpoint=True)

    async def set_state(self, chunk_id: int, state: ChunkState, note: str | None = None) -> None:
        def q(c: Any) -> None:
            c.execute(self.q["set_state"], self._p(state=state, note=note, id=chunk_id))
            if state in _FREES:
                self._release(c, chunk_id)
        await self._run(q)

    async def set_note(self, chunk_id: int, note: str) -> None:
        """What happened to a chunk's batch that changes no state (a cancel asked of the provider)."""
        def q(c: Any) -> None:
            c.execute(self.q["set_note"], self._p(note=note, id=chunk_id))
        await self._run(q)

    async def disown(self, chunk_id: int, note: str) -> None:
        """An adopted batch turned out not to be ours: forget it, send the chunk again."""
        def q(c: Any) -> None:
            c.execute(self.q["disown"], self._p(state=ChunkState.PLANNED, note=note, id=chunk_id))
            self._release(c, chunk_id)
        await self._run(q)

    async def record_queue_full(self, chunk_id: int, note: str, *, counter: str, limits: dict[str, Any]) -> None:
        """The provider's queue was full for this chunk's batch (a 429 at create, or a batch it failed for its
        token limit): the chunk waits to be sent again and none of its requests has used an attempt; the
        answer is counted and what admission learned from it kept, in one transaction."""
        def q(c: Any) -> None:
            c.execute(self.q["set_state"], self._p(state=ChunkState.PLANNED, note=note, id=chunk_id))
            self._release(c, chunk_id)
            self._add(c, {counter: 1})
            self._learned(c, limits)
        await self._run(q)

    async def record_queue_limits(self, doc: dict[str, Any]) -> None:
        """What admission learned of the provider's queues (`queue_limit`), for the next run to start from."""
        await self._run(lambda c: self._learned(c, doc))

    async def mark_ended(self, chunk_id: int, ended_at: float | None) -> None:
        """The batch ended at the provider (its room in a shared budget comes back)."""
        def q(c: Any) -> None:
            c.execute(self.q["mark_ended"], self._p(ended_at=ended_at or time.time(), id=chunk_id))
            self._release(c, chunk_id)
        await self._run(q)

    async def record_split(self, chunk_id: int, halves: list[tuple[int, int, int, list[str]]]) -> list[int]:
        """Replace a chunk by smaller ones: (skip, take, nbytes, custom_ids) each. Returns the new ids.

        skip/take place an input chunk's part in its root chunk; a retry chunk's requests move by custom_id.
        """
        def q(c: Any) -> list[int]:
            (parent,) = self._rows(self._all(c, "chunk", id=chunk_id))
            c.execute(self.q["set_state"], self._p(state=ChunkState.SPLIT, note=None, id=chunk_id))
            self._release(c, chunk_id)  # the halves take their own room when they are sent
            new_ids: list[int] = []
            for skip, take, nbytes, ids in halves:
                (row,) = self._all(c, "split_half", kind=parent.kind, root_seq=parent.root_seq, skip=skip, take=take,
                                   start_file=parent.start_file, start_pos=parent.start_pos,
                                   start_line=parent.start_line, end_file=parent.end_file, end_pos=parent.end_pos,
                                   nbytes=nbytes, state=ChunkState.PLANNED, attempt=parent.attempt,
                                   note=f"split from {chunk_id}", skipped=parent.skipped, digest=parent.digest)
                new_ids.append(int(row[0]))
                if parent.kind == ChunkKind.RETRY:
                    c.executemany(self.q["move_retry"], [self._p(chunk_id=new_ids[-1], custom_id=cid) for cid in ids])
                else:
                    c.execute(self.q["put_ids"], self._p(chunk_id=new_ids[-1], ids=orjson.dumps(ids)))
            return new_ids
        return await self._run(q)

    # -- requests refused by the API at create time ----------------------------------------------

    async def record_api_rejected(self, root_seq: int | None, custom_id: str, message: str) -> None:
        def q(c: Any) -> None:
            c.execute(self.q["put_rejected"], self._p(custom_id=custom_id, root_seq=root_seq, message=message))
            c.execute(self.q["retry_done"], self._p(state=RetryState.DONE, custom_id=custom_id))
        await self._run(q)

    async def api_rejected(self, root_seq: int | None = None) -> dict[str, str]:
        if root_seq is None:
            return await self._run(lambda c: dict(self._all(c, "api_rejected")))
        return await self._run(lambda c: dict(self._all(c, "api_rejected_of_root", root_seq=root_seq)))

    def read_api_rejected(self) -> dict[str, str]:
        """`api_rejected()` for a reader without an event loop (export), blocking."""
        return self._read(lambda c: dict(self._all(c, "api_rejected")))

    # -- retries --------------------------------------------------------------------------------

    async def retry_requests(self, chunk_id: int) -> list[tuple[str, bytes, int]]:
        """(custom_id, request line, attempts so far) assigned to a retry chunk."""
        return await self._run(lambda c: [(cid, bytes(r), a) for cid, r, a in self._all(
            c, "retry_requests", chunk_id=chunk_id)])

    async def pending_retries(self, limit: int, now: float | None = None) -> list[tuple[str, bytes, int]]:
        """Up to `limit` pending requests whose wait is over (fewest attempts first)."""
        at = time.time() if now is None else now
        return await self._run(lambda c: [(cid, bytes(r), a) for cid, r, a in self._all(
            c, "pending_retries", state=RetryState.PENDING, now=at, limit=limit)])

    async def next_retry_at(self) -> float | None:
        """When the next pending request's wait is over (epoch seconds), or None when none is pending."""
        return await self._run(lambda c: self._all(c, "next_retry_at", state=RetryState.PENDING)[0][0])

    async def count_retries(self, state: RetryState) -> int:
        return await self._run(lambda c: int(self._all(c, "count_retries", state=state)[0][0]))

    async def requeue(self, state: RetryState) -> int:
        """Requests parked as `state` (CANCELLED, FAILED) wait for another attempt again."""
        return await self._run(lambda c: int(c.execute(self.q["requeue"], self._p(
            to=RetryState.PENDING, state=state)).rowcount))

    # -- collection -----------------------------------------------------------------------------

    async def shard_offsets(self, shards: int) -> list[int]:
        return await self._run(lambda c: self._offsets(c, shards))

    def read_shard_offsets(self, shards: int) -> list[int]:
        """`shard_offsets()` for a reader without an event loop (export), blocking."""
        return self._read(lambda c: self._offsets(c, shards))

    async def record_collected(self, chunk_id: int, *, offsets: list[int], counts: dict[str, float],
                               park: Park, finals: list[str], wait: RetryWait | None = None, now: float | None = None,
                               objects: list[tuple[str, int, int, int]] | None = None) -> None:
        """Write-ahead step 4 (after the shard fsync): collected, offsets, counts, parked requests.

        park: (custom_id, request, attempts, state PENDING, CANCELLED or FAILED, last result line or None when
        the results left the request out); each waits `wait.after(attempts)` before it is sent again.
        finals: custom_ids of retried requests whose final line is now in the shards.
        objects: result objects uploaded for this batch, (key, shard, bytes, lines): listed here, they count.
        """
        at = time.time() if now is None else now

        def q(c: Any) -> None:
            c.executemany(self.q["put_offset"], [self._p(idx=i, offset=o) for i, o in enumerate(offsets)])
            if objects:
                c.executemany(self.q["put_object"], [self._p(key=k, chunk_id=chunk_id, shard=s, nbytes=b, lines=n)
                                                     for k, s, b, n in objects])
            self._park(c, park, wait, at)
            if finals:
                c.executemany(self.q["retry_done"], [self._p(state=RetryState.DONE, custom_id=cid) for cid in finals])
            self._add(c, counts)
            c.execute(self.q["collected"], self._p(state=ChunkState.COLLECTED, now=at, id=chunk_id))
            self._release(c, chunk_id)
        await self._run(q, checkpoint=True)

    async def record_failed(self, chunk_id: int, *, park: Park, note: str | None) -> None:
        """The provider failed a batch as a whole: its requests are parked (PENDING, or FAILED once out of
        attempts) in the same transaction that marks the chunk failed."""
        def q(c: Any) -> None:
            self._park(c, park)
            self._add(c, {"batches_failed": 1})
            c.execute(self.q["set_state"], self._p(state=ChunkState.FAILED, note=note, id=chunk_id))
            self._release(c, chunk_id)
        await self._run(q)

    async def add_counts(self, counts: dict[str, float]) -> None:
        await self._run(lambda c: self._add(c, counts))

    def result_objects(self) -> list[str]:
        """Keys of the result objects the ledger lists (the committed ones), in order."""
        return self._read(lambda c: [k for (k,) in self._all(c, "result_objects")])

    def counters(self) -> dict[str, float]:
        return self._read(self._counters)

    async def acounters(self) -> dict[str, float]:
        return await self._run(self._counters)

    def each_retried_final(self, fn: Callable[[str, int], None]) -> None:
        """fn(custom_id, attempts before the final one) for each request that was sent again and is final
        now, blocking (export counts attempts; no list of them is held here)."""
        def q(c: Any) -> None:
            for cid, attempts in c.execute(self.q["retried_finals"], self._p(state=RetryState.DONE)):
                fn(cid, attempts)
        self._read(q)

    def retry_counts(self) -> dict[RetryState, int]:
        """Parked requests by state; a ledger opened read-only may still spell CANCELLED the old way."""
        def q(c: Any) -> dict[RetryState, int]:
            out: dict[RetryState, int] = {}
            for state, n in self._all(c, "retry_counts"):
                key = RetryState.CANCELLED if state == _OLD_CANCELLED else RetryState(state)
                out[key] = out.get(key, 0) + int(n)
            return out
        return self._read(q)


_FREES = (ChunkState.PLANNED, ChunkState.DROPPED, ChunkState.FAILED, ChunkState.SPLIT)  # no batch holds room
