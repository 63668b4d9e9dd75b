"""What decides whether the next batch may go: a free slot, no hold, room under --max-cost, room in the queue.

What may be in flight is measured in what the provider limits: requests waiting in its queue
(Anthropic, inline) or estimated input tokens enqueued per model (OpenAI). The room is the provider's
queue limit as learned from its answers (`queue_limit`, `queue_budget`, `queues`): a batch takes room
before it is sent and gives it back the moment the provider says it ended, or that its queue was full.

A slot (a semaphore of --concurrency, or the daemon's shared slots) is an upper bound on batches open
at once: taken before a chunk is sent and given back once its results are durable. A hold stops every
new batch for the rest of the run: the job was cancelled (`cancel DIR` may mark it while this run
goes: the ledger is asked before each batch) or the budget would pass --max-cost. A background
failure also stops admission: the first one is kept and raised to whoever asks for a slot next.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

from batch_scheduler.job.admit.queue_budget import Ticket
from batch_scheduler.job.admit.queues import JobQueues, Weight
from batch_scheduler.job.money.budget import Budget
from batch_scheduler.job.observe import JobStats
from batch_scheduler.state.ledger import Ledger

log = logging.getLogger("batch_scheduler.engine")  # one log for the engine's pieces

CANCELLED_HOLD = "the job was cancelled"


@dataclass
class Pass:
    """A batch may go: its --max-cost estimate and its room in the provider's queue."""

    estimate_usd: float
    ticket: Ticket
    weight: Weight


class Admission:
    def __init__(self, slots: Any, budget: Budget, ledger: Ledger, stats: JobStats, queues: JobQueues, *,
                 cancelled: bool, spent_usd: float):
        self._slots = slots  # async acquire(), release(): a semaphore, or the daemon's shared slots
        self.budget = budget
        self.queues = queues
        self._ledger = ledger
        self._stats = stats
        self.cancelled = cancelled
        self.hold: str | None = CANCELLED_HOLD if cancelled else None  # why no new batch is sent
        self.held_back = 0  # requests not sent because of the hold
        self.spent_usd = spent_usd
        self.in_flight = 0  # slots taken
        self.changed = asyncio.Event()  # a slot came back, or a background task failed
        self._failed = asyncio.Event()
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

    async def admit(self, lines: list[bytes], weight: Weight, *, splittable: bool = False) -> Pass | None:
        """Take a slot, ask the hold and the budget, then wait for room in the queue: a Pass, or None
        (slot given back). A splittable batch heavier than a batch of the queue should be, once its limit is
        known, raises TooHeavy (slot given back): it is to go in parts."""
        await self.take_slot()
        if not self.cancelled and await self._ledger.is_cancelled():
            self.cancelled = True  # `cancel DIR` ran while we were going: send nothing new
            self.hold = CANCELLED_HOLD
        if self.hold:
            self.give_slot()
            return None
        est = self.budget.estimate(lines)
        if not self.budget.allows(self.spent_usd, est):
            self.give_slot()
            self.hold = self.budget.stopped_at
            log.warning("%s", self.hold)
            return None
        try:
            ticket = await self.room(weight, splittable=splittable)
        except BaseException:
            self.give_slot()
            raise
        return Pass(est, ticket, weight)

    async def room(self, weight: Weight, *, splittable: bool = False) -> Ticket:
        """Wait for room in the queue (the slot is already held); a background failure ends the wait."""
        if self.fatal is not None:
            self.check()
        waiter = asyncio.create_task(self.queues.reserve(weight, splittable=splittable), name="wait for queue room")
        failed = asyncio.create_task(self._failed.wait(), name="watch for a failure")
        try:
            await asyncio.wait([waiter, failed], return_when=asyncio.FIRST_COMPLETED)
        finally:
            failed.cancel()
            if not waiter.done():
                waiter.cancel()
        if not waiter.done() or waiter.cancelled():
            self.check()
        return waiter.result()

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
            self._failed.set()
        self.changed.set()

    def check(self) -> None:
        if self.fatal:
            raise self.fatal
