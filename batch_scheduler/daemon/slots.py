"""One budget of batches open at once (--concurrency) for every job the daemon runs, shared fairly.

This is an upper bound on batches; what paces the jobs is the provider's queue, whose budget (requests
or tokens queued, learned from the provider's answers) the jobs share through `job.queue_budget.QueuePool`
(`JobRunner.queues`): room goes to the job holding least, and a job alone may use all of it.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable


class FairSlots:
    """The daemon-wide budget of batches in flight (--concurrency), granted round-robin among jobs.

    Each job asks through its own handle (`handle(name)`, what its Engine gets as `slots=`). While
    nobody waits, a free slot goes to whoever asks. Once jobs wait, every freed slot goes to the next
    job in turn (turns in the order jobs started waiting), one slot a turn: a job with a thousand
    batches to send cannot starve one with two.
    """

    def __init__(self, capacity: int, *, on_grant: Callable[[str], None] | None = None):
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self.in_use = 0
        self._waiters: dict[str, deque[asyncio.Future[None]]] = {}
        self._turns: deque[str] = deque()  # jobs with waiters, next turn first
        self._on_grant = on_grant

    @property
    def waiting(self) -> int:
        return sum(len(q) for q in self._waiters.values())

    def handle(self, job: str, limit: int | None = None) -> JobSlots:
        return JobSlots(self, job, limit)

    async def _acquire(self, job: str) -> None:
        if self.in_use < self.capacity and not self._turns:
            self._grant(job)
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        queue = self._waiters.setdefault(job, deque())
        if not queue:
            self._turns.append(job)
        queue.append(fut)
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self._release()  # granted as it was cancelled: pass the slot on
            else:
                self._forget(job, fut)
            raise

    def _forget(self, job: str, fut: asyncio.Future[None]) -> None:
        queue = self._waiters.get(job)
        if queue is not None and fut in queue:
            queue.remove(fut)
            if not queue:
                del self._waiters[job]
                self._turns.remove(job)

    def _grant(self, job: str) -> None:
        self.in_use += 1
        if self._on_grant is not None:
            self._on_grant(job)

    def _release(self) -> None:
        if self.in_use <= 0:
            raise RuntimeError("FairSlots released more often than acquired")
        self.in_use -= 1
        while self.in_use < self.capacity and self._turns:
            job = self._turns.popleft()
            queue = self._waiters[job]
            fut = queue.popleft()
            if queue:
                self._turns.append(job)  # one slot a turn: back of the line
            else:
                del self._waiters[job]
            if fut.done():  # cancelled while waiting; its owner forgets it
                continue
            self._grant(job)
            fut.set_result(None)


class JobSlots:
    """One job's handle on the shared budget, optionally capped by the job's own `concurrency`."""

    def __init__(self, pool: FairSlots, job: str, limit: int | None = None):
        self._pool = pool
        self.job = job
        self._own = asyncio.Semaphore(limit) if limit else None
        self.held = 0

    async def acquire(self) -> None:
        if self._own is not None:
            await self._own.acquire()
        try:
            await self._pool._acquire(self.job)
        except BaseException:
            if self._own is not None:
                self._own.release()
            raise
        self.held += 1

    def release(self) -> None:
        if self.held <= 0:
            raise RuntimeError(f"job {self.job} released a slot it does not hold")
        self.held -= 1
        if self._own is not None:
            self._own.release()
        self._pool._release()

    def close(self) -> None:
        """The run is over: give back what it still holds (a stopped or refused run keeps its slots)."""
        while self.held:
            self.release()
