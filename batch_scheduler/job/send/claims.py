"""Whose batch is whose, across the jobs of one process: what adoption must never take.

A create whose answer was lost may still have made a batch, and the submitter looks for it before it
sends the chunk again (see `submitter`). Where the provider keeps metadata (OpenAI) the batch's tag says
whose it is. Where it keeps none (Anthropic) a batch is a candidate by its request count and creation
time only, and the custom_ids of its results confirm it; two jobs whose requests share custom_ids (the
same ids in two inputs) cannot be told apart that way. So what other jobs hold is ruled out first:

- every batch another job of this process created or adopted (`claim`), and, through `elsewhere`, every
  batch id the other jobs' ledgers record since the time looked at (a daemon gives every job of its
  spool one `Claims`, so no daemon job takes another's batch, even one made before a restart);
- no adoption looks while a create of any job sharing the `Claims` is in the air (its batch may be
  listed already while its id is not yet recorded).

A CLI run has a `Claims` of its own: jobs in other processes are known by their batches' custom_ids only
(README: give concurrent jobs distinct custom_ids; generated ids carry the job's name).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

Elsewhere = Callable[[str, float], set[str]]  # (this job's dir, since) -> batch ids other jobs hold (blocking)


class Claims:
    def __init__(self, elsewhere: Elsewhere | None = None):
        self._elsewhere = elsewhere
        self._owner_of: dict[str, str] = {}  # batch id -> the job (its directory) that holds it
        self._idle = asyncio.Condition()
        self._creating = 0  # create calls in the air, of every job sharing this
        self._adopting = False
        self._adopt_lock = asyncio.Lock()

    def claim(self, batch_id: str, owner: str) -> None:
        self._owner_of[batch_id] = owner

    def release(self, owner: str) -> None:
        """A job's run ended: what it holds is in its ledger now, where `elsewhere` finds it."""
        if self._elsewhere is not None:
            for batch_id in [b for b, o in self._owner_of.items() if o == owner]:
                del self._owner_of[batch_id]

    async def held_by_others(self, owner: str, since: float) -> set[str]:
        """Batch ids that jobs other than `owner` hold (in this process, or in their ledgers since `since`)."""
        held = {b for b, o in self._owner_of.items() if o != owner}
        if self._elsewhere is not None:
            held |= await asyncio.to_thread(self._elsewhere, owner, since)
        return held

    @asynccontextmanager
    async def creating(self) -> AsyncIterator[None]:
        """Around one create call: no adoption looks meanwhile."""
        async with self._idle:
            await self._idle.wait_for(lambda: not self._adopting)
            self._creating += 1
        try:
            yield
        finally:
            async with self._idle:
                self._creating -= 1
                self._idle.notify_all()

    @asynccontextmanager
    async def adopting(self) -> AsyncIterator[None]:
        """Around one look for a lost batch: one at a time, and only once no create is in the air."""
        async with self._adopt_lock:
            async with self._idle:
                self._adopting = True
                await self._idle.wait_for(lambda: self._creating == 0)
            try:
                yield
            finally:
                async with self._idle:
                    self._adopting = False
                    self._idle.notify_all()
