"""This node's claim on one job, kept alive: renewed every third of the lease, lost at once when not.

The lease is timed by the database's clock (queue.py); locally the node counts from the moment it
sent the claim or the renewal that succeeded, which can only be earlier than the database's moment,
so the local deadline never outlives the real one. When it passes without a renewal (PostgreSQL
unreachable, or the process was stopped: a SIGSTOP past the lease), or a renewal says the claim is
gone, `on_lost` drops the job at once. A create call starts only with more lease left than the
call's deadline (`before_create`); with less, it waits for the next renewal, and if none comes it
raises LeaseLost instead of sending.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Protocol

from batch_scheduler.core import errors

log = logging.getLogger("batch_scheduler.cluster")

RETRY_S = 0.5  # a renewal that could not reach PostgreSQL is tried again after this


class Renews(Protocol):
    """What a lease needs of the job queue (cluster.queue.JobQueue)."""

    async def renew(self, job_id: int, token: str, lease_s: float) -> tuple[bool, bool]: ...


class Lease:
    def __init__(self, queue: Renews, job_id: int, token: str, name: str, lease_s: float, *,
                 create_deadline_s: float, on_lost: Callable[[str], None], on_cancel: Callable[[], None],
                 clock: Callable[[], float] = time.monotonic, claimed_at: float | None = None):
        self._queue = queue
        self.job_id = job_id
        self.token = token
        self.name = name
        self.lease_s = lease_s
        self.create_deadline_s = min(create_deadline_s, lease_s / 2)
        self._on_lost = on_lost
        self._on_cancel = on_cancel
        self._clock = clock
        self.expires = (claimed_at if claimed_at is not None else clock()) + lease_s
        self.lost: str | None = None
        self._renewed = asyncio.Event()

    def left_s(self) -> float:
        return self.expires - self._clock()

    def lose(self, why: str) -> None:
        """The claim is gone (found by a renewal, or by a step of the job: a cancel): drop the job, once."""
        if self.lost is None:
            self.lost = why
            log.warning("job %s: %s; dropping it", self.name, why, extra={"job": self.name})
            self._on_lost(why)

    async def keep(self) -> None:
        """Renew until the claim is lost (or the task is cancelled when the job ends)."""
        next_renewal = self._clock() + self.lease_s / 3
        while self.lost is None:
            wait = min(next_renewal, self.expires) - self._clock()
            if wait > 0:
                await asyncio.sleep(wait)
            if self._clock() >= self.expires:
                self.lose(f"its lease ran out {self._clock() - self.expires:.1f} s ago without a renewal")
                return
            sent = self._clock()
            try:
                ours, cancel = await self._queue.renew(self.job_id, self.token, self.lease_s)
            except errors.LedgerUnavailable as err:
                log.warning("job %s: lease not renewed: %s", self.name, err, extra={"job": self.name})
                next_renewal = self._clock() + RETRY_S
                continue
            if not ours:
                self.lose("another node claimed it, or its lease ran out")
                return
            self.expires = sent + self.lease_s
            next_renewal = sent + self.lease_s / 3
            self._renewed.set()
            self._renewed = asyncio.Event()
            if cancel:
                self._on_cancel()

    async def before_create(self) -> float:
        """Seconds the next create call may take; LeaseLost if the lease has not that much left."""
        need = self.create_deadline_s
        while self.lost is None and self.left_s() < need:
            renewed = self._renewed
            try:
                async with asyncio.timeout(max(0.0, self.left_s())):
                    await renewed.wait()
            except TimeoutError:
                break
        if self.lost is not None or self.left_s() < need:
            raise errors.LeaseLost(f"job {self.name}: {max(0.0, self.left_s()):.1f} s of lease left, less than a "
                                   f"create call may take ({need:.1f} s); not sending it")
        return need
