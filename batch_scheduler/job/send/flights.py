"""What a run keeps of its work in flight, shared by its producer, sender and endings.

A `Flight` is one slot's worth of work: a chunk, which may become several batches (a 413 split, parts).
`Tracked` is what the poller hands back when a batch ends. `InFlight` is the run's book: the chunk rows
it is sending or tracking (`live`: the producer and the sweep leave those alone) and each tracked
batch's flight, so that a batch the provider has validated (seen through `Watched`, on every answer the
poller gets) holds its room in the queue for good (OpenAI checks the token limit while validating).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from batch_scheduler.job.admit.queue_budget import Ticket
from batch_scheduler.job.admit.queues import JobQueues, Weight
from batch_scheduler.providers.base import BatchInfo, BatchState, Provider
from batch_scheduler.state.ledger.sqlite import ChunkRow


@dataclass
class Flight:
    """One slot's worth of work: a chunk, which may become several batches after a 413 split."""

    remaining: int = 0  # batches not yet collected: the slot comes back at 0
    ticket: Ticket | None = None  # its room in the provider's queue, given back when its batches ended
    weight: Weight | None = None
    unended: int = 0  # batches the provider has not said ended


@dataclass
class Tracked:
    flight: Flight
    row: ChunkRow


class InFlight:
    """The chunk rows a run is sending or tracking, and the flight of each batch the provider has."""

    def __init__(self, queues: JobQueues, tg: asyncio.TaskGroup):
        self.live: set[int] = set()  # chunks this run is sending or tracking
        self._flights: dict[str, Flight] = {}  # batch id -> its flight, while the provider has it
        self._queues = queues
        self._tg = tg

    def add(self, flight: Flight, row_id: int, batch_id: str) -> None:
        self.live.add(row_id)
        flight.unended = max(flight.unended, 1)
        self._flights[batch_id] = flight

    def ended(self, batch_id: str) -> None:
        self._flights.pop(batch_id, None)

    def batch_ids(self) -> list[str]:
        """The batches the provider has for this run now."""
        return list(self._flights)

    def seen(self, info: BatchInfo) -> None:
        """Every answer the poller gets: a batch the provider has validated holds its room for good
        (OpenAI: the token limit is checked while validating)."""
        flight = self._flights.get(info.id)
        if flight is not None and info.validated and flight.ticket is not None and not flight.ticket.confirmed \
                and info.state is not BatchState.FAILED:
            self._tg.create_task(self._queues.accepted(flight.ticket), name=f"batch {info.id} validated")


class Watched:
    """The provider as the poller sees it, every batch answer shown to `seen` on the way (admission learns
    from a batch that passed validation before it ends)."""

    def __init__(self, provider: Provider, seen: Callable[[BatchInfo], None]):
        self._provider = provider
        self._seen = seen

    def __getattr__(self, name: str) -> Any:
        return getattr(self._provider, name)

    async def get(self, batch_id: str) -> BatchInfo:
        info = await self._provider.get(batch_id)
        self._seen(info)
        return info

    async def recent(self, since: float) -> AsyncIterator[BatchInfo]:
        async for info in self._provider.recent(since):
            self._seen(info)
            yield info
