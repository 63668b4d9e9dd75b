"""Stage 5: stream an ended batch's results into the shards, exactly once.

One batch is written at a time (the lock), so a failure can roll the shards back to the offsets the
ledger holds. A results line is parsed once, only as far as routing and counting need. Final lines go
to the shards as they came; a request that deserves another attempt (transient error, expired) is
parked in the ledger with its request line instead, until `max_attempts` is reached, when its last
line becomes final. Cancelled requests are parked as `cancelled` (see `run --retry-cancelled`).
After the download: flush + fsync the shards, then `Ledger.record_collected` (write-ahead step 3). A
cluster job's shards are write-once objects instead: uploaded first, then listed in the same
`record_collected`, which is their commit point.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from zlib import crc32

from batch_scheduler.core import errors
from batch_scheduler.core.http import backoff_s
from batch_scheduler.core.ledger import ChunkRow, Ledger, RetryState
from batch_scheduler.core.settings import Settings
from batch_scheduler.job.replay import Replay
from batch_scheduler.job.writer import ShardSet
from batch_scheduler.providers.base import OUTCOME_NAMES, BatchInfo, Outcome, Provider, Usage

log = logging.getLogger("batch_scheduler.collector")

CostFn = Callable[[str | None, object], float]


class NotOurs(Exception):
    """An adopted batch whose results name requests that are not in the chunk."""


@dataclass
class Collected:
    finals: int
    parked: int
    counts: dict[str, float]


class Collector:
    def __init__(self, provider: Provider, ledger: Ledger, shards: ShardSet, settings: Settings,
                 replay: Replay, cost: CostFn, *, rng: random.Random | None = None):
        self.provider = provider
        self.ledger = ledger
        self.shards = shards
        self.settings = settings
        self._replay = replay
        self._cost = cost
        self._rng = rng or random.Random()
        self.lock = asyncio.Lock()
        self.downloads_restarted = 0
        self._committing = False

    async def collect(self, row: ChunkRow, info: BatchInfo) -> Collected:
        async with self.lock:
            offsets = await self.ledger.shard_offsets(self.shards.n)
            policy = self.settings.retry
            attempt = 0
            while True:
                attempt += 1
                try:
                    return await self._collect_once(row, info, offsets)
                except errors.TransientError as err:
                    if self._committing:
                        raise
                    self.shards.rollback(offsets)
                    if attempt >= policy.attempts:
                        raise
                    self.downloads_restarted += 1
                    wait = backoff_s(policy, attempt, self._rng)
                    log.warning("results download of %s failed (%s); fetching it again in %.2fs", info.id, err, wait)
                    await asyncio.sleep(wait)
                except BaseException:
                    # Before the commit began, nothing of this batch counts: drop its lines. Once it began
                    # (fsync, then the ledger), the ledger decides: a cancelled commit may still land, and
                    # the next start truncates the shards to whatever the ledger holds.
                    if not self._committing:
                        self.shards.rollback(offsets)
                    raise
                finally:
                    self._committing = False

    async def _collect_once(self, row: ChunkRow, info: BatchInfo, offsets: list[int]) -> Collected:
        # This loop runs once per answer: the common case (a final answer of a first attempt) is a
        # parse, an append to a shard buffer and an append of the usage tuple; the rest is per batch.
        shards = self.shards
        nshards = shards.n
        add = shards.add
        classify = self.provider.classify
        first_retryable = Outcome.ERRORED_TRANSIENT  # this and above: may be parked (see Outcome)

        max_attempts = self.settings.max_attempts
        retry_attempts = await self._replay.attempts(row)  # empty for an input chunk: its first attempt
        owned: dict[str, bytes] | None = await self._replay.lookup(row) if row.adopted else None
        counts = [0] * len(Outcome)
        usages: dict[str | None, list[tuple[int, int, int, int]]] = {}  # per model; summed and priced per batch
        model_seen: str | None = None
        model_usages = usages.setdefault(None, [])
        to_park: list[tuple[str, Outcome, bytes]] = []
        finals_retried: list[str] = []
        final_attempts: dict[int, int] = {}
        n_lines = 0
        async for block in self.provider.result_blocks(info):
            n_lines += len(block)
            for line in block:
                try:
                    cid, outcome, usage, model = classify(line)
                except (ValueError, KeyError, TypeError) as exc:
                    raise errors.ProtocolError(f"unreadable results line in batch {info.id}: {exc}") from None
                if owned is not None and cid not in owned:
                    raise NotOurs(cid)
                if retry_attempts:
                    attempts = retry_attempts.get(cid, 0) + 1
                    if outcome is Outcome.CANCELED or (outcome >= first_retryable and attempts < max_attempts):
                        to_park.append((cid, outcome, line))
                        continue
                    finals_retried.append(cid)
                    final_attempts[attempts] = final_attempts.get(attempts, 0) + 1
                elif outcome >= first_retryable and (outcome is Outcome.CANCELED or max_attempts > 1):
                    to_park.append((cid, outcome, line))
                    continue
                add(crc32(cid.encode()) % nshards, line)  # writer.shard_of, inlined
                counts[outcome] += 1
                if usage is not None:
                    if model != model_seen:
                        model_seen = model
                        model_usages = usages.setdefault(model, [])
                    model_usages.append(usage)
            shards.account(sum(map(len, block)) + len(block))
        if not retry_attempts:
            final_attempts[1] = sum(counts)
        by_model = {m: Usage(*map(sum, zip(*us, strict=True))) for m, us in usages.items() if us}
        park = await self._park(row, to_park, retry_attempts)
        self._committing = True
        new_offsets = await shards.durable()
        summary: dict[str, float] = {}
        for o, c in enumerate(counts):
            if c:
                summary[OUTCOME_NAMES[Outcome(o)]] = summary.get(OUTCOME_NAMES[Outcome(o)], 0) + c
        if counts[Outcome.ERRORED_TRANSIENT]:
            summary["errored_transient_final"] = counts[Outcome.ERRORED_TRANSIENT]
        summary.update({"input_tokens": sum(u.input_tokens for u in by_model.values()),
                        "output_tokens": sum(u.output_tokens for u in by_model.values()),
                        "cache_write_tokens": sum(u.cache_write_tokens for u in by_model.values()),
                        "cache_read_tokens": sum(u.cache_read_tokens for u in by_model.values()),
                        "cost_usd": sum(self._cost(m, u) for m, u in by_model.items()),
                        "batches_collected": 1, "result_lines": n_lines})
        for a, c in final_attempts.items():
            if c:
                summary[f"final_after_{a}_attempts"] = c
        parked_retry = sum(1 for p in park if p[3] == RetryState.PENDING)
        if parked_retry:
            summary["retried"] = parked_retry
        await self.ledger.record_collected(row.id, offsets=new_offsets, counts=summary, park=park,
                                           finals=finals_retried, objects=shards.uploaded)
        offsets[:] = new_offsets
        return Collected(sum(counts), len(park), summary)

    async def _park(self, row: ChunkRow, to_park: list[tuple[str, Outcome, bytes]],
                    retry_attempts: dict[str, int]) -> list[tuple[str, bytes, int, RetryState, bytes]]:
        if not to_park:
            return []
        requests = await self._replay.lookup(row)
        park = []
        for cid, outcome, line in to_park:
            request = requests.get(cid)
            if request is None:
                raise errors.ProtocolError(f"batch result names {cid!r}, which is not in its chunk")
            attempts = retry_attempts.get(cid, 0) + 1 if retry_attempts else 1
            state = RetryState.CANCELLED if outcome is Outcome.CANCELED else RetryState.PENDING
            park.append((cid, request, attempts, state, line))
        return park
