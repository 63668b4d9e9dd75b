"""The realtime lane: a chunk's requests one call each through the provider's realtime endpoint,
collected as a batch's results are (the same shards, the same ledger, exactly once).

    sender -> RealtimeLane.send: note the chunk (write-ahead) -> calls (bounded, paced) -> endings

Write-ahead: the chunk's intent is recorded before anything is sent (`record_intent`, as for a batch),
then noted as realtime (`REALTIME_NOTE`) before the first call. The answers are kept in memory and
handed to the endings as an ended "batch" (`realtime-<chunk id>`, BatchInfo.lane "realtime"), whose
collection writes them to the shards and marks the chunk collected in one transaction. A run killed
before that leaves the chunk noted and in `submitting`: the next run counts each of its requests as a
call that may have been paid (`realtime_possibly_paid`: its answer was lost) and sends the chunk again,
so every request is answered once in the output.

A call: a slot (--realtime-concurrency), an open --window, the pacer's turn; then one request. A 429
slows the lane (`Pacer`) and the call is made again: it never fails a request. A transient failure the
HTTP layer gave up on, or an answer lost on the way (possibly paid: counted), becomes a transient
errored answer, parked for another attempt as a batch's would be. A refused key stops the run as in
batch mode. Answers are priced at realtime prices (the collector's `realtime_cost`).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from batch_scheduler.core import errors
from batch_scheduler.job.admit.admission import Admission
from batch_scheduler.job.observe import JobStats
from batch_scheduler.job.send.flights import Flight, Tracked
from batch_scheduler.job.send.route import Lane, Route
from batch_scheduler.job.send.submitter import Outgoing
from batch_scheduler.providers.base import BatchInfo, BatchState, Provider, parse_time
from batch_scheduler.state.ledger import Ledger
from batch_scheduler.state.ledger.sqlite import ChunkRow, ChunkState

log = logging.getLogger("batch_scheduler.engine")

REALTIME_NOTE = "realtime calls under way"
REALTIME_PREFIX = "realtime-"
MIN_SPACING_S, MAX_SPACING_S = 0.05, 60.0  # the pacer's spacing between calls after 429s
WINDOW_NAP_S = 60.0  # outside every --window a call waits this long at most, then looks again
# the clock --window is read on and the wait outside it (a test scripts both)
wall_clock: Callable[[], float] = time.time
window_pause: Callable[[float], Awaitable[Any]] = asyncio.sleep
_GO_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_GO_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
# (limit, remaining, reset) headers of requests and of tokens: Anthropic's, then OpenAI's
_RATE_HEADERS = (
    ("anthropic-ratelimit-requests-limit", "anthropic-ratelimit-requests-remaining",
     "anthropic-ratelimit-requests-reset"),
    ("anthropic-ratelimit-input-tokens-limit", "anthropic-ratelimit-input-tokens-remaining",
     "anthropic-ratelimit-input-tokens-reset"),
    ("x-ratelimit-limit-requests", "x-ratelimit-remaining-requests", "x-ratelimit-reset-requests"),
    ("x-ratelimit-limit-tokens", "x-ratelimit-remaining-tokens", "x-ratelimit-reset-tokens"),
)


def reset_s(value: str | None, now_epoch: float) -> float | None:
    """Seconds until a rate limit resets: an RFC 3339 time (Anthropic) or a Go duration (`1m30s`, `20ms`)."""
    if not value:
        return None
    parts = _GO_DURATION.findall(value)
    if parts and "".join(n + u for n, u in parts) == value.strip():
        return sum(float(n) * _GO_UNIT_S[u] for n, u in parts)
    at = parse_time(value)
    return max(0.0, at - now_epoch) if at is not None else None


class Pacer:
    """When the next realtime call may start: held until the reset when an answer's rate-limit headers
    say a limit (requests or tokens) is used up, held for a 429's retry-after and spaced further after each
    429 (twice the last spacing), the spacing halved again by each answer that leaves room."""

    def __init__(self, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep):
        self._clock = clock
        self._sleep = sleep
        self.not_before = 0.0
        self.interval_s = 0.0  # between starts, after 429s
        self._last = float("-inf")
        self.rate_limited = 0  # 429s met

    async def turn(self) -> None:
        while (at := max(self.not_before, self._last + self.interval_s)) > (now := self._clock()):
            await self._sleep(at - now)
        self._last = self._clock()

    def learn(self, headers: dict[str, str], now_epoch: float | None = None) -> None:
        epoch = time.time() if now_epoch is None else now_epoch
        for _limit, remaining_h, reset_h in _RATE_HEADERS:
            remaining = _int(headers.get(remaining_h))
            if remaining == 0 and (wait := reset_s(headers.get(reset_h), epoch)) is not None:
                self.not_before = max(self.not_before, self._clock() + wait)
            elif remaining:
                self.interval_s = self.interval_s / 2 if self.interval_s > MIN_SPACING_S else 0.0

    def limited(self, retry_after_s: float | None) -> None:
        self.rate_limited += 1
        self.not_before = max(self.not_before, self._clock() + (retry_after_s or 1.0))
        self.interval_s = min(MAX_SPACING_S, max(MIN_SPACING_S, self.interval_s * 2))


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


class Answered:
    """The provider as the collector sees it: a realtime chunk's answers come from memory."""

    def __init__(self, provider: Provider):
        self._provider = provider
        self.answers: dict[str, list[bytes]] = {}  # realtime-<chunk id> -> its answers, until collected

    def __getattr__(self, name: str) -> Any:
        return getattr(self._provider, name)

    async def result_blocks(self, info: BatchInfo) -> AsyncIterator[list[bytes]]:
        if info.lane == Lane.REALTIME.value:
            yield self.answers.pop(info.id)
            return
        async for block in self._provider.result_blocks(info):
            yield block


class RealtimeLane:
    def __init__(self, provider: Provider, answered: Answered, ledger: Ledger, stats: JobStats,
                 admission: Admission, route: Route, on_answered: Callable[[Tracked, BatchInfo], Awaitable[None]],
                 *, concurrency: int, discount: float, pacer: Pacer | None = None):
        self._provider = provider
        self._answered = answered
        self._ledger = ledger
        self._stats = stats
        self._admission = admission
        self.route = route
        self._on_answered = on_answered
        self._calls = asyncio.Semaphore(concurrency)
        self._discount = discount or 1.0
        self.pacer = pacer or Pacer()
        self.possibly_paid = 0

    def wants(self, out: Outgoing) -> bool:
        """Whether this chunk goes realtime now: the route says so, and --max-cost has room for the extra."""
        if self.route.lane() is not Lane.REALTIME:
            return False
        budget = self._admission.budget
        if budget.cap_usd is None:
            return True
        held = budget.in_flight.get(out.chunk_id, 0.0)
        extra = held * (1 / self._discount - 1)
        if self._admission.spent_usd + sum(budget.in_flight.values()) + extra > budget.cap_usd:
            return False  # by batch: the deadline may be missed, the cap is not
        budget.in_flight[out.chunk_id] = held + extra
        return True

    @staticmethod
    def was_realtime(row: ChunkRow) -> bool:
        return row.state == ChunkState.SUBMITTING and row.note == REALTIME_NOTE

    async def lost(self, row: ChunkRow) -> None:
        """A realtime chunk an earlier run did not collect: its calls may have been paid; it goes again."""
        await self._ledger.add_counts({"realtime_possibly_paid": row.take})
        await self._ledger.set_state(row.id, ChunkState.PLANNED, "realtime answers lost (possibly paid)")
        log.warning("chunk %s: %s realtime call(s) of an earlier run got no recorded answer; counted as possibly "
                    "paid, sent again", row.id, f"{row.take:,}")

    async def send(self, out: Outgoing, flight: Flight) -> None:
        """Every request of the chunk through the realtime endpoint, then its answers to the endings."""
        await self._ledger.set_note(out.chunk_id, REALTIME_NOTE)
        done: list[bytes | None] = [None] * len(out.lines)
        try:
            async with asyncio.TaskGroup() as tg:
                for i, (line, cid) in enumerate(zip(out.lines, out.ids, strict=True)):
                    await self._calls.acquire()
                    tg.create_task(self._call(done, i, line, cid), name=f"realtime {cid}")
        except BaseException:
            paid = sum(1 for d in done if d is not None)
            if paid:  # answered, not recorded: the chunk goes again
                await asyncio.shield(self._ledger.add_counts({"realtime_possibly_paid": paid}))
            raise
        self._stats.submitted += len(out.lines)
        now = time.time()
        info = BatchInfo(f"{REALTIME_PREFIX}{out.chunk_id}", BatchState.ENDED, ended_at=now, total=len(done),
                         lane=Lane.REALTIME.value)
        self._answered.answers[info.id] = [d for d in done if d is not None]
        flight.remaining += 1
        flight.unended += 1
        await self._on_answered(Tracked(flight, await self._ledger.chunk(out.chunk_id)), info)

    async def _call(self, done: list[bytes | None], i: int, line: bytes, cid: str) -> None:
        try:
            done[i] = await self.answer(line, cid)
        finally:
            self._calls.release()

    async def answer(self, line: bytes, cid: str) -> bytes:
        """One request's answer as a results line; a 429 waits and goes again, never fails it."""
        provider = self._provider
        while True:
            if (closed := self.route.windows.wait_s(wall_clock())) > 0:
                log.info("outside every --window: realtime calls pause for %.0f s", closed)
                await window_pause(min(closed, WINDOW_NAP_S))
                continue
            await self.pacer.turn()
            seen: dict[str, str] = {}
            try:
                return await provider.answer_now(line, seen)
            except errors.RateLimited as err:
                self.pacer.limited(err.retry_after_s)
                continue
            except (errors.OutcomeUnknown, errors.TimeoutError_) as err:
                self.possibly_paid += 1
                await self._ledger.add_counts({"realtime_possibly_paid": 1})
                return provider.error_line(cid, "api_error", f"realtime answer lost ({err}): possibly paid")
            except (errors.ServerError, errors.NetworkError, errors.Conflict, errors.ProtocolError) as err:
                return provider.error_line(cid, "api_error", f"realtime call failed: {err}")
            finally:
                self.pacer.learn(seen)
