"""Stage 5: stream an ended batch's results into the shards, exactly once, and account for every request.

One batch is written at a time (the lock), so a failure can roll the shards back to the offsets the
ledger holds. A results line is parsed once, only as far as routing and counting need. Final lines go
to the shards as they came; a request that deserves another attempt (a transient error, expired) is
parked in the ledger with its request line instead, until its attempts run out, when its last line
becomes final. Cancelled requests are parked as `cancelled` (see `run --retry-cancelled`).

Answers are untrusted: a line whose custom_id is readable but whose other fields have another shape
(`providers.answers.ShapeError`) is kept as it came as an errored answer (final: not paid again), the
batch's warning naming the first; a line without a readable custom_id stops the run naming the batch.

Completeness: the collector knows the custom_ids the batch carried (at most one batch's worth,
100,000 ids, never the job's). Each gets exactly one final line or is parked for another attempt: a
repeated line and a line for a custom_id the batch did not carry are ignored and counted, never
written; a request the results leave out is parked for a new attempt (`missing_from_results`). The
parking happens in the same ledger transaction that marks the batch collected, so a kill -9 at any
point leaves the batch either uncollected (collected again from the start) or collected with its
missing requests queued.

Attempts: an answer that reports no usage was not billed (errored before processing, expired, timed
out, missing); such a request gets up to `--max-unbilled-attempts`, one whose answer was billed up to
`--max-attempts`. Parked requests wait `--retry-wait` (doubling per attempt) before they are sent again.

A 404 for the results of a batch this job recorded is a ghost (the real API has answered so for a
while after create): the download is tried again with backoff, the lock given up meanwhile, for up to
`--not-found-grace` since the poll that saw the batch ended; past it the run stops naming the batch.
After the download: flush + fsync the shards, then `Ledger.record_collected` (write-ahead step 4).
A cluster job's shards are write-once objects instead: uploaded first, then listed in the same
`record_collected`, which is their commit point.
"""

from __future__ import annotations

import asyncio
import logging
import random
import statistics
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from zlib import crc32

from batch_scheduler.core import errors
from batch_scheduler.core.http import backoff_s
from batch_scheduler.core.options import BY_NAME
from batch_scheduler.core.settings import Settings
from batch_scheduler.job.collect.early import Early, Turns
from batch_scheduler.job.input.replay import Replay
from batch_scheduler.job.money.pricing import model_counters
from batch_scheduler.providers.answers import ShapeError
from batch_scheduler.providers.base import OUTCOME_NAMES, BatchInfo, Outcome, Provider, Usage
from batch_scheduler.state.ledger import Ledger
from batch_scheduler.state.ledger.sqlite import ChunkRow, RetryState, RetryWait
from batch_scheduler.state.shards import ShardSet

log = logging.getLogger("batch_scheduler.collector")

CostFn = Callable[..., float]  # PriceTable.cost: (model, usages[, their columns]) -> USD
Judge = Callable[[bytes], bytes | None]  # a succeeded line -> None when its answer is valid, else the line to keep
Park = tuple[str, bytes, int, RetryState, bytes | None]  # (custom_id, request, attempts, state, last line)


class NotOurs(Exception):
    """An adopted batch whose results name requests that are not in the chunk."""


@dataclass
class Collected:
    finals: int
    parked: int
    counts: dict[str, float]


def unbilled_limit(settings: Settings) -> int:
    """Attempts a request gets while no answer of it was billed (never fewer than --max-attempts)."""
    return max(settings.max_attempts, settings.max_unbilled_attempts)


RETRY_WAIT_MAX_S = 600.0  # the longest wait between attempts of one request (unless --retry-wait is longer)
RETRY_WAIT_MIN_S = 1.0  # the shortest first wait, however fast the provider's batches come back
TURNAROUNDS_KEPT = 32  # the batches whose turnaround sets the first wait: the latest ones


def retry_wait(settings: Settings, turnaround_s: float | None = None) -> RetryWait:
    """How long a request waits before its next attempt: --retry-wait after the first, doubling.

    With the default --retry-wait, where this job's batches come back faster than it (the median
    turnaround of its latest batches, create to ended), the first wait is that turnaround instead (at
    least RETRY_WAIT_MIN_S): the provider spaces attempts by a round trip anyway, and waiting longer than
    one only lengthens the tail. Batches that take an hour, as real ones do, keep 10 s; a --retry-wait the
    user gave is kept as given."""
    first = settings.retry_wait_s
    if turnaround_s is not None and first == BY_NAME["retry_wait"].default:
        first = min(first, max(RETRY_WAIT_MIN_S, turnaround_s))
    return RetryWait(first, max(settings.retry_wait_s, RETRY_WAIT_MAX_S))


def realtime_extra(info: BatchInfo, realtime_cost: CostFn, usages: dict[str | None, list[tuple[int, ...]]],
                   costs: dict[str | None, float]) -> float | None:
    """What the realtime lane's answers cost beyond their batch price (None for a batch's answers)."""
    if info.lane != "realtime":
        return None
    return sum(realtime_cost(m, usages[m]) - c for m, c in costs.items())


class Collector:
    def __init__(self, provider: Provider, ledger: Ledger, shards: ShardSet, settings: Settings,
                 replay: Replay, cost: CostFn, *, rng: random.Random | None = None,
                 clock: Callable[[], float] = time.monotonic, realtime_cost: CostFn | None = None,
                 judge: Judge | None = None):
        self.provider = provider
        self.ledger = ledger
        self.shards = shards
        self.settings = settings
        self._replay = replay
        self._cost = cost
        self._realtime_cost = realtime_cost or cost  # answers of the realtime lane (BatchInfo.lane)
        self._judge = judge  # response_model=: a succeeded answer's JSON checked (None: valid)
        self._rng = rng or random.Random()
        self._clock = clock
        self.turns = Turns()  # the lock: one batch at a time; the next one's download opens at the commit
        self.downloads_restarted = 0
        self.results_not_found = 0  # results downloads that answered 404 and were tried again
        self._committing = False
        self._turnarounds: deque[float] = deque(maxlen=TURNAROUNDS_KEPT)

    def turnaround_s(self) -> float | None:
        """The median turnaround (create to ended at the provider) of this job's latest batches, if known."""
        return statistics.median(self._turnarounds) if self._turnarounds else None

    async def collect(self, row: ChunkRow, info: BatchInfo, *, downloaded: Callable[[], None] | None = None
                      ) -> Collected:
        """Stream the batch's results into the shards and commit them. `downloaded` is called once, when every
        line is in and the commit begins: from then on the batch either lands or the run stops."""
        if info.created_at is not None and info.ended_at is not None and info.ended_at >= info.created_at:
            self._turnarounds.append(info.ended_at - info.created_at)
        policy = self.settings.retry
        started = self._clock()  # the poll that saw the batch ended: its last good answer
        attempt = ghosts = 0
        while True:
            opener = (lambda: self.provider.result_blocks(info)) if attempt == ghosts == 0 else None
            early = await self.turns.acquire(opener)
            try:
                offsets = await self.ledger.shard_offsets(self.shards.n)
                try:
                    return await self._collect_once(row, info, offsets, downloaded, early)
                except errors.NotFound:
                    self.shards.rollback(offsets)
                    grace = self.settings.not_found_grace_s
                    if self._clock() - started > grace:
                        raise errors.BatchVanished.of(info.id, "its results", grace) from None
                    ghosts += 1
                    self.results_not_found += 1
                    wait = backoff_s(policy, ghosts, self._rng)
                    log.debug("results of %s: 404 (a batch just made or ended may answer so for a while); "
                             "trying again in %.2fs", info.id, wait)
                except errors.TransientError as err:
                    if self._committing:
                        raise
                    self.shards.rollback(offsets)
                    attempt += 1
                    if attempt >= policy.attempts:
                        raise
                    self.downloads_restarted += 1
                    wait = backoff_s(policy, attempt, self._rng)
                    # a cut download the next try usually completes: said once it repeats
                    (log.warning if attempt > 1 else log.debug)(
                        "results download of %s failed (%s); fetching it again in %.2fs", info.id, err, wait)
                except BaseException:
                    # Before the commit began, nothing of this batch counts: drop its lines. Once it began
                    # (fsync, then the ledger), the ledger decides: a cancelled commit may still land, and
                    # the next start truncates the shards to whatever the ledger holds.
                    if not self._committing:
                        self.shards.rollback(offsets)
                    raise
                finally:
                    self._committing = False
            finally:
                if early is not None:
                    await early.close()  # read to its end, or dropped with the attempt that failed
                self.turns.release()
            await asyncio.sleep(wait)  # the lock is free meanwhile: other batches are collected

    async def _collect_once(self, row: ChunkRow, info: BatchInfo, offsets: list[int],
                            downloaded: Callable[[], None] | None = None, early: Early | None = None) -> Collected:
        # This loop runs once per answer: the common case (a final answer of a first attempt) is a
        # parse, two set/dict looks, an append to a shard buffer and an append of the usage tuple.
        shards = self.shards
        nshards = shards.n
        pending = shards.pending  # shards.add, inlined
        classify = self.provider.classify
        first_retryable = Outcome.ERRORED_TRANSIENT  # this and above: may be parked (see Outcome)
        billed_limit = self.settings.max_attempts
        free_limit = unbilled_limit(self.settings)
        judge, invalid_retries, invalid_parked = self._judge, self.settings.retry_invalid, 0

        # what the batch carried (custom_ids, at most one batch's worth), and attempts made before
        expected, sent, before = await self._carried(row)
        retry = not self._replay.from_input(row)
        remaining = set(expected)  # ids not answered yet: an answer takes its id out (one look, not three)
        answered = remaining.remove
        repeated = foreign = misshapen = 0
        first_misshapen = ""
        counts = [0] * len(Outcome)
        usages: dict[str | None, list[tuple[int, ...]]] = {}  # per model; summed and priced per batch
        model_seen: str | None = None
        model_usages = usages.setdefault(None, [])
        to_park: list[tuple[str, Outcome, bytes]] = []
        finals_retried: list[str] = []
        final_attempts: dict[int, int] = {}
        n_lines = 0
        async for block in early.blocks() if early is not None else self.provider.result_blocks(info):
            n_lines += len(block)
            for line in block:
                try:
                    cid, outcome, usage, model = classify(line)
                except ShapeError as exc:  # its custom_id is readable: kept as it came, as an errored answer
                    cid, outcome, usage, model = exc.custom_id, Outcome.ERRORED, None, None
                    if not misshapen:
                        first_misshapen = str(exc)
                    misshapen += 1
                except (ValueError, KeyError, TypeError) as exc:
                    raise errors.ProtocolError(f"unreadable results line in batch {info.id}: {exc}") from None
                try:
                    answered(cid)
                except KeyError:
                    if cid in expected:
                        repeated += 1  # the request was answered already in this download
                        continue
                    if row.adopted:
                        raise NotOurs(cid) from None
                    foreign += 1  # an answer to a request this batch did not carry: never written
                    continue
                if judge is not None and outcome is Outcome.SUCCEEDED and (kept := judge(line)) is not None:
                    outcome, line = Outcome.INVALID, kept
                    if before.get(cid, 0) < invalid_retries:  # sent again: a new attempt, this one billed
                        to_park.append((cid, outcome, line))
                        invalid_parked += 1
                        if usage is not None:
                            usages.setdefault(model, []).append(usage)
                        continue
                elif outcome >= first_retryable:
                    # an answer that reports usage was billed: it gets fewer attempts than one that was not
                    limit = billed_limit if usage is not None else free_limit
                    if outcome is Outcome.CANCELED or before.get(cid, 0) + 1 < limit:
                        to_park.append((cid, outcome, line))
                        continue
                if retry:
                    attempts = before.get(cid, 0) + 1
                    finals_retried.append(cid)
                    final_attempts[attempts] = final_attempts.get(attempts, 0) + 1
                pending[crc32(cid.encode()) % nshards].append(line)  # writer.shard_of and shards.add, inlined
                counts[outcome] += 1
                if usage is not None:
                    if model != model_seen:
                        model_seen = model
                        model_usages = usages.setdefault(model, [])
                    model_usages.append(usage)
            shards.account(sum(map(len, block)) + len(block))
        if not retry:
            final_attempts[1] = sum(counts)
        missing = [cid for cid in expected if cid in remaining] if remaining else []  # in the order carried
        del expected, remaining
        if (to_park or missing) and sent is None:
            sent = await self._replay.lookup(row)  # the request lines, read again only when some go back
        park = self._park(to_park, missing, sent or {}, before)
        del sent
        if missing:
            # sent again at once and counted (summary.json requests.missing_from_results): no operator's business
            log.debug("batch %s: %s of its requests are missing from its results; they are sent again",
                      info.id, f"{len(missing):,}")
        if misshapen:
            log.warning("batch %s: %s result line(s) of an unexpected shape, kept as errored (the first: %s)",
                        info.id, f"{misshapen:,}", first_misshapen)
        if repeated or foreign:
            log.warning("batch %s: ignored %s repeated result line(s) and %s for custom_ids it did not carry",
                        info.id, f"{repeated:,}", f"{foreign:,}")
        columns = {m: list(zip(*us, strict=True)) for m, us in usages.items() if us}  # each token kind's counts
        by_model = {m: Usage(*map(sum, cols)) for m, cols in columns.items()}
        # each model's answers priced once (per long-context tier): the batch's cost and the model's counter
        costs = {m: self._cost(m, usages[m], cols) for m, cols in columns.items()}
        extra = realtime_extra(info, self._realtime_cost, usages, costs)
        self._committing = True
        self.turns.committing()  # the next batch's download opens
        if downloaded is not None:
            downloaded()
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
                        "cache_write_1h_tokens": sum(u.cache_write_1h_tokens for u in by_model.values()),
                        # each answer's usage, so a request past a long-context threshold is priced as one
                        "cost_usd": sum(costs.values()),
                        "batches_collected": 1, "result_lines": n_lines})
        summary.update(model_counters(usages, by_model, costs))
        if extra is not None:
            summary.update({"realtime_requests": sum(counts), "realtime_extra_usd": extra,
                            "cost_usd": summary["cost_usd"] + extra})
        for a, c in final_attempts.items():
            if c:
                summary[f"final_after_{a}_attempts"] = c
        for name, n in (("missing_from_results", len(missing)), ("results_repeated", repeated),
                        ("results_foreign", foreign)):
            if n:
                summary[name] = n
        parked_retry = sum(1 for p in park if p[3] == RetryState.PENDING)
        if parked_retry:
            summary["retried"] = parked_retry
        if invalid_parked:
            summary["invalid_retried"] = invalid_parked
        await self.ledger.record_collected(row.id, offsets=new_offsets, counts=summary, park=park,
                                           finals=finals_retried, wait=retry_wait(self.settings, self.turnaround_s()),
                                           objects=shards.uploaded)
        offsets[:] = new_offsets
        return Collected(sum(counts), len(park), summary)

    async def _carried(self, row: ChunkRow) -> tuple[set[str] | dict[str, bytes], dict[str, bytes] | None,
                                                     dict[str, int]]:
        """(custom_ids the batch carried, their request lines if at hand, attempts made before each).

        A retry chunk's requests are in the ledger. An input chunk's custom_ids are too (minus those the API
        refused at create); its request lines are read again from the input only if some must be parked.
        An adopted batch, or a chunk an earlier version recorded without its ids, is read in full.
        """
        if self._replay.from_input(row) and not row.adopted:
            ids = await self.ledger.chunk_ids(row.id)
            if ids is not None:
                refused = await self.ledger.api_rejected(row.root_seq)
                return set(ids).difference(refused), None, {}
        sent: dict[str, bytes] = {}
        before: dict[str, int] = {}
        for cid, request, attempts_before in await self._replay.requests(row):
            sent[cid] = request
            if attempts_before:
                before[cid] = attempts_before
        return sent, sent, before

    def _park(self, to_park: list[tuple[str, Outcome, bytes]], missing: list[str], sent: dict[str, bytes],
              before: dict[str, int]) -> list[Park]:
        """What the ledger keeps for another attempt: transient and cancelled answers, and the requests the
        results left out (an unbilled attempt each; out of attempts they wait FAILED for the next run)."""
        park: list[Park] = []
        def request(cid: str) -> bytes:
            line = sent.get(cid)
            if line is None:
                raise errors.ProtocolError(f"batch result names {cid!r}, which is no longer in its chunk")
            return line

        for cid, outcome, line in to_park:
            state = RetryState.CANCELLED if outcome is Outcome.CANCELED else RetryState.PENDING
            park.append((cid, request(cid), before.get(cid, 0) + 1, state, line))
        free_limit = unbilled_limit(self.settings)
        for cid in missing:
            attempts = before.get(cid, 0) + 1
            park.append((cid, request(cid), attempts,
                         RetryState.PENDING if attempts < free_limit else RetryState.FAILED, None))
        return park
