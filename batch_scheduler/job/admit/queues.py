"""One job's view of the provider's queues: what each batch weighs, its tickets, what is learned and kept.

The budget itself (`queue_budget.QueuePool`) may be shared by the daemon's jobs; this is the job's
side: it weighs a batch (`Measure`), asks the pool's queue for room, tells it what the provider
answered, writes what the queues learned to the job's ledger (so that a resumed run starts from it)
and keeps the job's figures (`JobStats`: queued units, the current limit, queue-full answers) for the
progress line and summary.json.

Where the provider caps its jobs as well as its requests or tokens (`JobsQueue.alone` false: Bedrock,
Gemini), a batch takes room in both: a job in the jobs queue (`Ticket.jobs`) beside its units in the other.
A queue-full answer about jobs (`errors.QueueFull.jobs`) is told to the jobs queue only: it holds the
next create until a job of ours ends, and what the other queue admits (so the size of a batch) is untouched.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from batch_scheduler.core import errors
from batch_scheduler.core.settings import ProviderSpec, Settings
from batch_scheduler.job.admit.queue_budget import (
    REQUESTS,
    Measure,
    Queue,
    QueuePool,
    Ticket,
    account_of,
    reserve_all,
)
from batch_scheduler.job.observe import JobStats
from batch_scheduler.state.ledger import Ledger

log = logging.getLogger("batch_scheduler.engine")

OVERLAP_BATCHES = 8  # batches that should fit in what a queue holds, so upload, processing and download overlap
ALONE_MAX = 10  # queue-full answers in a row with nothing of ours queued before the run stops (resumable)


class QueueStuck(errors.SchedulerError):
    """The provider's queue stays full with nothing of this job in it: the run stops, resumable."""
LEDGER_KEY = "queue_limits"


@dataclass(frozen=True)
class Weight:
    key: str  # which queue: "requests", or the model
    units: int  # in the provider's unit
    estimate: int  # our own estimate (tokens; the request count for requests)
    requests: int


class JobQueues:
    def __init__(self, pool: QueuePool, settings: Settings, spec: ProviderSpec, ledger: Ledger, stats: JobStats,
                 *, job: str, learned: Any = None):
        self._pool = pool
        self._spec = spec
        self._ledger = ledger
        self._stats = stats
        self._job = job
        self._account = account_of(settings)
        self._cap = settings.max_enqueued_tokens if spec.queue_unit == "tokens" else settings.max_queued_requests
        # a queue full of others' work is tried again on the polling scale: poll-min, doubling to 5x poll-max
        self._backoff_s = (settings.poll_min_s, max(settings.poll_min_s, 5 * settings.poll_max_s))
        self._learned: dict[str, Any] = dict(learned) if isinstance(learned, dict) else {}
        self._used: dict[str, Queue] = {}
        self._tickets: set[Ticket] = set()  # what this run holds in the queues (given back by `close`)
        self._last_units = 1
        jobs = spec.jobs_queue
        self._jobs_key = jobs.key_of(settings.model) if jobs is not None and not jobs.alone else None
        self.measure = Measure(spec)
        self.queue_full = 0  # 429s at create for a full queue, this run
        self.token_limit_failures = 0
        stats.queue_unit = spec.queue_unit
        stats.queue_limit = self.queue(REQUESTS).limit if spec.queue_unit == "requests" else None

    @property
    def learned(self) -> dict[str, Any]:
        """What the job's queues learned, as the ledger keeps it."""
        return self._learned

    def queue(self, key: str) -> Queue:
        q = self._used.get(key)
        if q is None:
            q = self._used[key] = self._pool.queue(self._account, key, self._spec, self._cap, self._learned.get(key),
                                                   backoff_s=self._backoff_s)
        return q

    def has_room(self) -> bool:
        """Whether a queue of the job's has room for another batch now (what a batch weighed last), and its
        jobs queue (where the provider caps jobs as well) for one more job."""
        jobs = self._used.get(self._jobs_key) if self._jobs_key is not None else None
        if jobs is not None and jobs.in_flight + 1 > jobs.limit:
            return False
        return any(q.in_flight + self._last_units <= q.limit for q in self._used.values() if q is not jobs)

    def weigh(self, lines: list[bytes]) -> Weight:
        key, units, estimate = self.measure.of(lines)
        self._last_units = units
        return Weight(key, units, estimate, len(lines))

    def part_limit(self, key: str) -> int:
        """Units a batch should stay under, so that about OVERLAP_BATCHES fill the queue."""
        return self.queue(key).learner.part_limit(OVERLAP_BATCHES)

    async def reserve(self, weight: Weight, *, splittable: bool = False) -> Ticket:
        """Wait for room for a batch; a splittable one heavier than `part_limit` (once the queue's limit is
        known) raises TooHeavy."""
        wants = [(self.queue(weight.key), weight.units)]
        if self._jobs_key is not None:
            wants.append((self.queue(self._jobs_key), 1))
        ticket, *jobs = await reserve_all(self._job, wants, self._pool.clock,
                                          split_into=OVERLAP_BATCHES if splittable and weight.requests > 1 else None)
        ticket.jobs = jobs[0] if jobs else None
        self._tickets.add(ticket)
        self._show(ticket.queue)
        return ticket

    def restore(self, key: str, units: int) -> Ticket:
        """A batch an earlier run left at the provider: it holds its room at once."""
        q = self.queue(key)
        ticket = q.restore(units, self._job)
        if self._jobs_key is not None:
            ticket.jobs = self.queue(self._jobs_key).restore(1, self._job)
        self._tickets.add(ticket)
        self._show(q)
        return ticket

    def given_back(self, ticket: Ticket) -> None:
        """A batch that was not created after all (a restored chunk with no batch at the provider): its room
        comes back, nothing learned."""
        for t in _both(ticket):
            t.queue.given_back(t)
        self._tickets.discard(ticket)
        self._show(ticket.queue)

    async def accepted(self, ticket: Ticket) -> None:
        for t in _both(ticket):
            if t.queue.accepted(t):
                await self._keep(t.queue)
        self._show(ticket.queue)

    async def refused(self, ticket: Ticket, stated: int | None, *, token_limit: bool, chunk_id: int,
                      note: str, jobs: bool = False) -> None:
        """A queue-full answer for the chunk's batch: the learner of the queue it is about is told (its jobs
        queue's, for an answer about jobs), the chunk waits to be sent again (no attempt used), and both are
        in the ledger in one step. The batch's room in its other queue comes back, nothing learned there."""
        full = ticket.jobs if jobs and ticket.jobs is not None else ticket
        for other in _both(ticket):
            if other is not full and token_limit:  # the batch failed: it ended there
                other.queue.ended(other)
            elif other is not full:  # refused at create: it never entered the other queue
                other.queue.given_back(other)
        q = full.queue
        in_flight = q.in_flight - full.units
        q.refused(full, stated)
        self._tickets.discard(ticket)
        self.queue_full += int(not token_limit)
        self.token_limit_failures += int(token_limit)
        self._stats.queue_full = self.queue_full + self.token_limit_failures
        what = "token limit" if token_limit else "queue full"
        log.warning("%s at the provider (%s %s of ours queued, this batch %s%s): admitting up to %s %s; "
                    "the batch is sent again, no attempt used", what, f"{in_flight:,}", q.unit,
                    f"{full.units:,}", f", stated limit {stated:,}" if stated else "", f"{q.limit:,}", q.unit)
        self._learned[q.key] = q.learner.to_doc()
        await self._ledger.record_queue_full(chunk_id, note, limits=self._learned,
                                             counter="token_limit_failures" if token_limit else "queue_full")
        self._show(ticket.queue)
        if q.learner.alone >= ALONE_MAX:
            raise QueueStuck(f"the provider's queue ({q.key}) stayed full with nothing of this job in it: "
                             f"{q.learner.alone} queue-full answers in a row")

    def ended(self, ticket: Ticket, *, validated: bool) -> None:
        for t in _both(ticket):
            if validated:
                t.queue.accepted(t)  # it ran: the provider held it (OpenAI: past validating unseen)
            t.queue.ended(t)
        self._tickets.discard(ticket)
        self._show(ticket.queue)

    def close(self) -> None:
        """The run is over: what it still holds in the queues is given back (a shared pool outlives it; the
        next run of the job holds its batches in flight again from the ledger)."""
        for ticket in list(self._tickets):
            for t in _both(ticket):
                t.queue.ended(t)
        self._tickets.clear()

    def observed(self, weight_estimate: int, requests: int, answered: int, input_tokens: float) -> None:
        self.measure.observe(weight_estimate, requests, answered, input_tokens)

    async def _keep(self, q: Queue) -> None:
        self._learned[q.key] = q.learner.to_doc()
        await self._ledger.record_queue_limits(self._learned)

    def _show(self, q: Queue) -> None:
        self._stats.queue_unit = q.unit  # Claude on Vertex: its batches weigh one of 4 jobs, not requests
        self._stats.queued = q.held.get(self._job, 0)
        self._stats.queue_limit = q.limit
        self._stats.queue_peak = max(self._stats.queue_peak, self._stats.queued)

    def summary(self) -> dict[str, Any]:
        """summary.json's `queue`: per queue the limit learned and the hard cap, and the answers counted."""
        return {
            "unit": self._spec.queue_unit,
            "hard_cap": self._cap,
            "limits": {k: {"limit": q.limit, "confirmed": q.learner.confirmed, "ceiling": q.learner.ceiling,
                           "stated": q.learner.stated, "peak_in_flight": q.peak} for k, q in self._used.items()},
            "queue_full_answers": self.queue_full,
            "token_limit_failures": self.token_limit_failures,
            "peak_queued": self._stats.queue_peak,
        }


def _both(ticket: Ticket) -> list[Ticket]:
    """A batch's tickets: its room in its queue, and in its provider's jobs queue if it counts there too."""
    return [ticket] if ticket.jobs is None else [ticket, ticket.jobs]
