"""What decides whether the next batch may go: a free slot, no hold, room under --max-cost.

A slot (a semaphore of --concurrency, or the daemon's shared slots) is taken before a chunk is sent
and given back once its results are durable, so at most K batches are in flight. A hold stops every
new batch for the rest of the run: the job was cancelled (`cancel DIR` may mark it while this run
goes: the ledger is asked before each batch) or the budget would pass --max-cost. A background
failure also stops admission: the first one is kept and raised to whoever asks for a slot next.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from batch_scheduler.core.ledger import Ledger
from batch_scheduler.job.budget import Budget
from batch_scheduler.job.progress import JobStats

log = logging.getLogger("batch_scheduler.engine")  # one log for the engine's pieces

CANCELLED_HOLD = "the job was cancelled"


class Admission:
    def __init__(self, slots: Any, budget: Budget, ledger: Ledger, stats: JobStats, *, cancelled: bool,
                 spent_usd: float):
        self._slots = slots  # async acquire(), release(): a semaphore, or the daemon's shared slots
        self.budget = budget
        self._ledger = ledger
        self._stats = stats
        self.cancelled = cancelled
        self.hold: str | None = CANCELLED_HOLD if cancelled else None  # why no new batch is sent
        self.held_back = 0  # requests not sent because of the hold
        self.spent_usd = spent_usd
        self.in_flight = 0  # slots taken
        self.changed = asyncio.Event()  # a slot came back, or a background task failed
        self.fatal: BaseException | None = None

    async def take_slot(self) -> None:
        await self._slots.acquire()
        self.in_flight += 1
        self._stats.in_flight = self.in_flight
        self.check()

    def give_slot(self) -> None:
        self.in_flight -= 1
        self._stats.in_flight = self.in_flight
        self._slots.release()
        self.changed.set()

    async def admit(self, lines: list[bytes]) -> float | None:
        """Take a slot, then ask the hold and the budget: the batch's estimate, or None (slot given back)."""
        await self.take_slot()
        if not self.cancelled and await self._ledger.is_cancelled():
            self.cancelled = True  # `cancel DIR` ran while we were going: send nothing new
            self.hold = CANCELLED_HOLD
        if self.hold:
            self.give_slot()
            return None
        est = self.budget.estimate(lines)
        if self.budget.allows(self.spent_usd, est):
            return est
        self.give_slot()
        self.hold = self.budget.stopped_at
        log.warning("%s", self.hold)
        return None

    def sent(self, chunk_id: int, estimate_usd: float) -> None:
        """A chunk's estimate counts against the cap until it is settled."""
        self.budget.in_flight[chunk_id] = estimate_usd

    def settled(self, chunk_id: int, cost_usd: float = 0.0) -> None:
        """A chunk's batch ended: what it cost is spent, its estimate no longer held."""
        self.spent_usd += cost_usd
        self.budget.in_flight.pop(chunk_id, None)

    def fail(self, exc: BaseException) -> None:
        """A background task failed: keep the first real error, wake the producer."""
        if self.fatal is None and not isinstance(exc, asyncio.CancelledError):
            self.fatal = exc
        self.changed.set()

    def check(self) -> None:
        if self.fatal:
            raise self.fatal
