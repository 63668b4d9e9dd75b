"""Stage 3: turn a chunk into a batch at the provider, exactly once.

Write-ahead: the intent is in the ledger when the chunk is planned, the chunk is marked at its create
call just before the call is sent (`record_creating`: only a marked chunk may have made a batch its
ledger does not know), and the batch id is recorded the moment it returns. When a create's outcome is unknown (the connection dropped after the body was sent, a
timeout, or the process died there), a batch may exist that we would pay for twice: before sending
again we look for it with the list endpoint and adopt it. What may be ours: a batch created after the
intent that no chunk of this job claims and, where the provider keeps metadata (OpenAI), that carries
this chunk's tag (`job-<token>-chunk-<id>`: the token is made once per job and kept in the ledger, so
jobs sharing an account never take each other's batches and a restart still knows its own); where it
keeps none (Anthropic), that has the same request count and that no other job holds (`claims`: the
batches other jobs of this process created or adopted, and those their ledgers record), nearest the
time the create was started. There the job creates and looks in its turn (`Claims.turn`), and a lost
create keeps the turn until its chunk has looked: no other job's unrecorded batch can be in the list.
The collector confirms ownership from the custom_ids of its results.

In a cluster (a `lease` given) a create is only started with more of the node's lease left than the
call may take, and the call is cut off at that deadline (an unknown outcome, as a timeout is): a
create that returns has its batch id written while the claim is still the node's; if the claim went
meanwhile, the batch is marked nobody's and cancelled (`_give_up`), unless the new owner adopted it.

A create answer of another shape (no `id`, an id the ledger already holds: `errors.BadAnswer`) says
nothing of the batch the create made: it is an unknown outcome as well, looked for, sent again at most
UNKNOWN_RESENDS times, then the job stops with the answer's message.

Refusals: 413 splits the chunk in two; a 400 that names `requests.N` sends request N to
rejected.jsonl and submits the rest; 401/403 and other 400s stop the job (resumable). A full queue
(`QueueFull`) leaves the chunk planned and is raised to the run, which sends it again once there is
room (no attempt used); when it interrupts a 413 split, `err.sent` lists the halves that went.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

from batch_scheduler.core import errors
from batch_scheduler.job.input.validate import Rejects
from batch_scheduler.job.send.claims import Claims, shared
from batch_scheduler.providers.base import BatchInfo, Provider
from batch_scheduler.state.ledger import Ledger
from batch_scheduler.state.ledger.sqlite import ChunkKind, ChunkState

log = logging.getLogger("batch_scheduler.submitter")

ADOPT_WINDOW_S = 120.0  # created_at may be this much before our intent (clock skew)
UNKNOWN_RESENDS = 6  # creates sent again after unknown outcomes before giving up
JOB_TOKEN_KEY = "job_token"  # ledger meta: the job's tag token, and when it was made
JOB_TOKEN_AT_KEY = "job_token_at"


def job_token(ledger: Ledger, clock: Callable[[], float]) -> tuple[str, float]:
    """The job's token and when it was made: random, made by the first run, read back by every later one."""
    meta = ledger.read_meta()
    token = meta.get(JOB_TOKEN_KEY)
    if isinstance(token, str) and token:
        return token, float(meta.get(JOB_TOKEN_AT_KEY) or 0.0)
    token, made_at = secrets.token_hex(6), clock()
    ledger.write_meta({JOB_TOKEN_KEY: token, JOB_TOKEN_AT_KEY: made_at})
    return token, made_at


@dataclass
class Outgoing:
    chunk_id: int
    kind: ChunkKind
    root_seq: int | None
    skip: int
    lines: list[bytes]
    ids: list[str]
    attempt: int
    intent_at: float
    raw_index: list[int] | None = None  # input chunks: each line's index in its root chunk's lines
    take: int | None = None  # how many of the root chunk's lines this chunk covers (refused ones too)

    def __post_init__(self) -> None:
        if self.raw_index is None:
            self.raw_index = list(range(self.skip, self.skip + len(self.lines)))
        if self.take is None:
            self.take = len(self.lines)


@dataclass
class Submitted:
    chunk_id: int
    info: BatchInfo
    n: int


ORPHAN_CANCEL_S = 10.0  # how long a stale node tries to cancel a batch it made after its claim was gone


class Submitter:
    def __init__(self, provider: Provider, ledger: Ledger, rejects: Rejects, *,
                 overhead: Callable[[int], int], clock: Callable[[], float] = time.time,
                 claims: Claims | None = None, owner: str = "", lease: Any = None):
        self.provider = provider
        self.ledger = ledger
        self.rejects = rejects
        self._overhead = overhead
        self._clock = clock
        self.claims = claims or shared()  # shared by every job of the process
        self._owner = owner  # this job, as `claims` knows it (its directory)
        self._lease = lease  # cluster: async before_create() -> seconds the create may take (LeaseLost if none)
        self._claimed: set[str] = set()
        self._created_at: dict[int, float] = {}  # chunk -> when its create in the air was marked started
        self._not_for: dict[int, set[str]] = {}  # chunk -> batches it adopted whose results were not its own
        self._settled = asyncio.Event()  # set (and replaced) when an adopted batch was proved its chunk's, or let go
        self._token, self._token_at = job_token(ledger, clock)

    def claim(self, batch_id: str) -> None:
        """A batch of ours no chunk records any more (one the provider failed): never adopted for another."""
        self._claimed.add(batch_id)

    def not_ours(self, batch_id: str, chunk_id: int) -> None:
        """An adopted batch whose results are not this chunk's: never adopted for it again, and let go for the
        chunk that made it to find (another job's, or, after a crash left two creates unrecorded, another
        chunk of this job: so it is ruled out for this chunk only)."""
        self._not_for.setdefault(chunk_id, set()).add(batch_id)
        self._claimed.discard(batch_id)
        self.claims.disown(batch_id, self._owner)

    def tag(self, chunk_id: int) -> str:
        """What a create for this chunk is tagged with: unique across jobs, the same after a restart."""
        return f"{self.job_tag}chunk-{chunk_id}"

    @property
    def job_tag(self) -> str:
        """What every create tag of this job starts with."""
        return f"job-{self._token}-"

    def nbytes(self, lines: list[bytes]) -> int:
        return sum(len(x) + self._overhead(len(x)) for x in lines) + 64

    async def submit(self, out: Outgoing, *, on_wait: Callable[[], None] | None = None) -> list[Submitted]:
        """Create the batch (two or more after a 413 split). Raises FatalError to stop the job.

        on_wait: called before a lost create's chunk waits for other chunks' adoptions to settle (it may
        be hours: what the caller holds for the upload goes back)."""
        lines, ids, index = out.lines, out.ids, out.raw_index or []
        resends = 0
        while lines:
            try:
                info, unknown = await self._create_or_find(out, lines, on_wait)
            except errors.RequestTooLarge:
                return await self._split(out, lines, ids, index)
            except errors.RequestRejected as err:
                idx = errors.rejected_request_index(str(err))
                if idx is None or idx >= len(lines):
                    raise
                await self._reject_one(out, ids[idx], str(err))
                lines, ids, index = lines[:idx] + lines[idx + 1:], ids[:idx] + ids[idx + 1:], index[:idx] + index[idx + 1:]
                if lines:
                    out.intent_at = await self._intent_again(out, lines)
                continue
            except errors.ProviderError:
                # the API answered: no batch was created; the chunk waits for the next run
                await self.ledger.set_state(out.chunk_id, ChunkState.PLANNED)
                raise
            if info is not None:
                if unknown is None:
                    await self.ledger.add_counts({"batches_created": 1, "requests_sent": len(lines)})
                return [Submitted(out.chunk_id, info, len(lines))]  # created, or found after a lost answer
            resends += 1
            if resends > UNKNOWN_RESENDS and unknown is not None:
                raise unknown
            await self.ledger.add_counts({"creates_resent": 1})
            out.intent_at = await self._intent_again(out, lines)
        await self.ledger.set_state(out.chunk_id, ChunkState.DROPPED, "every request was refused")
        return []

    async def _create_or_find(self, out: Outgoing, lines: list[bytes], on_wait: Callable[[], None] | None = None
                              ) -> tuple[BatchInfo | None, errors.SchedulerError | None]:
        """One create, in this job's turn (where only counts tell batches apart); when its answer is lost,
        the look for its batch before the turn is given back, so that no other job's look takes it.
        Returns (the batch created, None), (the batch adopted, the lost answer's error) or (None, that error).
        """
        chunk_id = out.chunk_id
        async with self._turn():
            try:
                return await self._create(chunk_id, lines), None
            except (errors.OutcomeUnknown, errors.TimeoutError_, errors.BadAnswer) as err:
                await self.ledger.add_counts({"creates_unknown": 1})
                log.warning("create for chunk %s: outcome unknown (%s); looking for the batch", chunk_id, err)
                started = self._created_at.get(chunk_id) or out.intent_at
                found, unknown = await self._look(chunk_id, len(lines), started), err
            finally:
                self._created_at.pop(chunk_id, None)
        if found is None:  # out of the turn: the batch may be one another chunk adopted, not yet proved its
            found = await self._when_adoptions_settle(chunk_id, len(lines), started, on_wait)
        return found, unknown

    def _turn(self) -> AbstractAsyncContextManager[None]:
        """This job's turn to create and look, where batches are told apart by their request count only."""
        return self.claims.turn(self._owner) if self.provider.tag_of is None else nullcontext()

    async def _create(self, chunk_id: int, lines: list[bytes]) -> BatchInfo:
        """One create call, marked in the ledger just before it is sent (`record_creating`: only then may a
        batch exist for a later run to look for), and counted so that adoption never runs while a create (of
        any job sharing the claims) is in the air.

        Otherwise a batch just created (visible in the list, its id not yet recorded) could be adopted by
        another chunk, or another job. The batch id is recorded before the count drops.
        """
        async with self.claims.creating():
            deadline_s = None if self._lease is None else await self._lease.before_create()
            self._created_at[chunk_id] = await self.ledger.record_creating(chunk_id)
            if deadline_s is None:
                info = await self.provider.create(lines, tag=self.tag(chunk_id))
            else:
                try:
                    async with asyncio.timeout(deadline_s):
                        info = await self.provider.create(lines, tag=self.tag(chunk_id))
                except TimeoutError:
                    raise errors.TimeoutError_(f"create: no answer within {deadline_s:.0f} s (the lease's "
                                               f"margin)") from None
            await self._check_new(info.id)
            self._claimed.add(info.id)
            self.claims.claim(info.id, self._owner)
            try:
                await self.ledger.record_submitted(chunk_id, info.id)
            except errors.LeaseLost:
                await self._give_up(info.id)
                raise
            return info

    async def _check_new(self, batch_id: str) -> None:
        """A create answer names a new batch: one whose id this job already holds says nothing of the batch
        the create made (an unknown outcome: looked for, as after a lost answer)."""
        if batch_id in self._claimed or batch_id in await self.ledger.claimed_batch_ids():
            raise errors.BadAnswer(f"create answer: id {batch_id} is a batch the job's ledger already holds")

    async def _give_up(self, batch_id: str) -> None:
        """Cluster: a batch created after this node's claim on the job was gone. Unless the new owner adopted
        it, nobody will collect it: it is marked nobody's and cancelled (what it ran before is still paid)."""
        mark = getattr(self.ledger, "record_orphan", None)
        if mark is None or not await mark(batch_id):
            return
        try:
            async with asyncio.timeout(ORPHAN_CANCEL_S):
                await asyncio.shield(self.provider.cancel(batch_id))
            log.warning("batch %s was created after this node's claim on the job was gone: cancelled", batch_id)
        except Exception as err:  # noqa: BLE001 - best effort: the claim is gone either way
            log.warning("batch %s was created after this node's claim on the job was gone and could not be "
                        "cancelled (%s); it runs, and its results are not used", batch_id, err)

    async def _intent_again(self, out: Outgoing, lines: list[bytes]) -> float:
        await self.ledger.record_intent(kind=out.kind, take=len(lines), nbytes=self.nbytes(lines),
                                        chunk_id=out.chunk_id)
        return self._clock()

    async def _reject_one(self, out: Outgoing, custom_id: str, message: str) -> None:
        await self.ledger.record_api_rejected(out.root_seq, custom_id, message)
        self.rejects.add(None, None, custom_id, f"refused by the API: {message}")
        await self.ledger.add_counts({"api_rejected": 1})

    async def _split(self, out: Outgoing, lines: list[bytes], ids: list[str], index: list[int]) -> list[Submitted]:
        if len(lines) == 1:
            await self._reject_one(out, ids[0], "request too large for a batch (413)")
            await self.ledger.set_state(out.chunk_id, ChunkState.DROPPED, "413 on a single request")
            return []
        half = len(lines) // 2
        # the halves cover whole ranges of the root chunk's lines, refused lines included (they stay refused)
        mid, end = index[half], out.skip + (out.take or len(lines))
        specs = [(out.skip, mid - out.skip, self.nbytes(lines[:half]), ids[:half]),
                 (mid, end - mid, self.nbytes(lines[half:]), ids[half:])]
        child_ids = await self.ledger.record_split(out.chunk_id, specs)
        log.info("chunk %s: 413 from the API, split into %s", out.chunk_id, child_ids)
        done: list[Submitted] = []
        for child_id, (a, b), (skip, take, nbytes, _) in zip(child_ids, [(0, half), (half, len(lines))], specs,
                                                            strict=True):
            await self.ledger.record_intent(kind=out.kind, take=take, nbytes=nbytes, chunk_id=child_id)
            child = Outgoing(child_id, out.kind, out.root_seq, skip, lines[a:b], ids[a:b], out.attempt,
                             self._clock(), index[a:b], take)
            try:
                done += await self.submit(child)
            except errors.QueueFull as err:
                err.sent = done  # type: ignore[attr-defined]  # the halves that went; the rest stay planned
                raise
        return done

    async def adopt(self, chunk_id: int, n: int, intent_at: float | None) -> BatchInfo | None:
        """A batch created after `intent_at` (when the chunk's create was started) that nobody claims and
        that may be this chunk's, or None. Looked for in this job's turn."""
        async with self._turn():
            found = await self._look(chunk_id, n, intent_at)
        return found if found is not None else await self._when_adoptions_settle(chunk_id, n, intent_at)

    def settled(self) -> None:
        """An adopted batch ended and the ledger says what became of it (collected as its chunk's, or let go).
        Each waiter holds the event of the moment it read the ledger: a settle after that read wakes it, even
        when another waiter has woken and read again meanwhile."""
        self._settled.set()
        self._settled = asyncio.Event()

    async def _when_adoptions_settle(self, chunk_id: int, n: int, intent_at: float | None,
                                     on_wait: Callable[[], None] | None = None) -> BatchInfo | None:
        """Where only counts tell batches apart (no tags): a chunk that found no batch of its own while other
        chunks of this job hold adopted batches not yet proved theirs waits until each is proved (its results
        collected) or let go, looking again after each; None once none is held. Otherwise two chunks whose
        creates were both lost (a kill with creates in the air) could each miss: the first adopts the
        second's batch, the second finds nothing and sends again, and the first's batch turns out not to be
        its own when it ends: the second's requests paid twice."""
        if self.provider.tag_of is not None:
            return None
        said = False
        while True:
            settled = self._settled  # taken before the ledger is read: a settle after the read wakes this chunk
            held = [r.id for r in await self.ledger.chunks_in(ChunkState.SUBMITTED) if r.adopted and r.id != chunk_id]
            if not held:
                return None
            if not said:
                log.info("chunk %s: no batch of its own listed; it waits until the batches chunks %s adopted "
                         "prove theirs or not before it is sent again", chunk_id, ", ".join(map(str, held[:5])))
                said = True
                if on_wait is not None:
                    on_wait()
            await settled.wait()
            async with self._turn():
                found = await self._look(chunk_id, n, intent_at)
            if found is not None:
                return found

    async def _look(self, chunk_id: int, n: int, intent_at: float | None) -> BatchInfo | None:
        since = (intent_at or self._clock()) - ADOPT_WINDOW_S
        async with self.claims.adopting():
            return await self._adopt(chunk_id, n, since, intent_at)

    async def _adopt(self, chunk_id: int, n: int, since: float, intent_at: float | None) -> BatchInfo | None:
        recent = [info async for info in self.provider.recent(since)]
        claimed = (self._claimed | self._not_for.get(chunk_id, set()) | await self.ledger.claimed_batch_ids()
                   | await self.claims.held_by_others(self._owner, since))
        candidates = [info for info in recent
                      if info.id not in claimed and self._may_be_ours(info, chunk_id, n, intent_at)]
        if not candidates:
            return None
        # the right count first, then the one created nearest the intent: the most likely to be ours
        candidates.sort(key=lambda i: (i.total != n, abs((i.created_at or 0) - (intent_at or 0))))
        info = candidates[0]
        await self.ledger.record_submitted(chunk_id, info.id, adopted=True)
        self._claimed.add(info.id)
        self.claims.claim(info.id, self._owner)
        await self.ledger.add_counts({"batches_adopted": 1, "batches_created": 1, "requests_sent": n})
        log.info("chunk %s: adopted batch %s (created while the answer was lost)", chunk_id, info.id)
        return info

    def _may_be_ours(self, info: BatchInfo, chunk_id: int, n: int, intent_at: float | None) -> bool:
        """Whether a batch may be the one a lost create of this chunk made.

        A provider that keeps metadata (it has `tag_of`) says whose a batch is: it must carry this chunk's
        tag (or, for an intent made before this job had a token, the `chunk-<id>` tag of earlier versions),
        and its count must not contradict ours (OpenAI counts 0 until it has validated the file).
        Without metadata (Anthropic) the request count, with the time window, is all there is.
        """
        tag_of = self.provider.tag_of
        if tag_of is None:
            return info.total == n
        tag = tag_of(info)
        before_token = intent_at is not None and intent_at < self._token_at
        if tag != self.tag(chunk_id) and not (before_token and tag == f"chunk-{chunk_id}"):
            return False
        return info.total in (n, 0, None)
