"""What a run does with a batch the provider says has ended: collect it, or send it again.

The poller hands over an ended batch; its room in the provider's queue comes back at once (`_on_ended`),
then it is collected one batch at a time (`collector`). A batch the provider failed as a whole for its
model's token limit gives its requests back without using an attempt and is sent again once there is
room (`_token_limited`); any other failed batch uses an attempt of each request (`_batch_failed`).
`Flight` and `Tracked` are what the run keeps of a batch in flight; `Watched` shows the run every batch
answer the poller gets (a batch OpenAI has validated holds its room for good).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from batch_scheduler.job.admit.queue_budget import Ticket
from batch_scheduler.job.admit.queues import Weight
from batch_scheduler.job.collect.collector import NotOurs
from batch_scheduler.job.observe import batch_times
from batch_scheduler.providers.base import BatchInfo, BatchState, Provider
from batch_scheduler.state.sqlite import ChunkRow, RetryState

if TYPE_CHECKING:
    from batch_scheduler.job.run import Run

log = logging.getLogger("batch_scheduler.engine")  # one log for the engine's pieces


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


class Endings:
    """The collecting half of `Run` (a mixin: every method runs on the run)."""

    async def _on_ended(self: Run, payload: Any, info: BatchInfo) -> None:
        flight = payload.flight
        self._flights.pop(info.id, None)
        flight.unended -= 1
        if flight.ticket is not None and flight.unended <= 0 and info.state is not BatchState.FAILED:
            self.queues.ended(flight.ticket, validated=True)  # it ran: the provider held it
        self._collecting += 1
        self._collect_idle.clear()
        task = self._tg.create_task(self._collect(payload, info))
        task.add_done_callback(self._collected)

    def _collected(self: Run, _task: asyncio.Task) -> None:
        self._collecting -= 1
        if not self._collecting:
            self._collect_idle.set()

    async def _collect(self: Run, payload: Tracked, info: BatchInfo) -> None:
        row, flight = payload.row, payload.flight
        try:
            await self.ledger.mark_ended(row.id, info.ended_at)
            if info.state is BatchState.FAILED:
                ticket, flight.ticket = flight.ticket, None
                alone = ticket is None or ticket.queue.in_flight == ticket.units  # nothing else of ours queued
                requeue = info.queue_full and not (alone and row.take <= 1)
                note = f"batch {info.id}: {info.error}"
                if ticket is not None and info.queue_full:
                    await self.queues.refused(ticket, info.stated_limit, token_limit=True, chunk_id=row.id, note=note)
                elif info.queue_full:
                    await self.ledger.record_queue_full(row.id, note, counter="token_limit_failures",
                                                        limits=self.queues.learned)
                elif ticket is not None:
                    self.queues.ended(ticket, validated=False)
                if requeue:
                    await self._token_limited(row, info, flight)
                    return
                await self._batch_failed(row, info)
            else:
                try:
                    got = await self.collector.collect(row, info)
                except NotOurs as exc:
                    await self._not_ours(row, info, flight, exc)
                    return
                self.stats.finished += got.finals
                self.observer.batch_collected(*batch_times(row.submitted_at, info.ended_at, time.time()))
                self.admission.settled(row.id, got.counts.get("cost_usd", 0.0))
                if flight.weight is not None:
                    c = got.counts
                    self.queues.observed(flight.weight.estimate, row.take, int(c.get("succeeded", 0)),
                                         c.get("input_tokens", 0) + c.get("cache_write_tokens", 0)
                                         + c.get("cache_read_tokens", 0))
                if got.parked:
                    self._pending_retries = await self.ledger.count_retries(RetryState.PENDING)
            await self.provider.collected(info)  # its staged files may go (the provider's own, if any)
            self._live_rows.discard(row.id)
            flight.remaining -= 1
            if flight.remaining <= 0:
                self.admission.give_slot()
        except BaseException as exc:
            self.admission.fail(exc)
            raise

    async def _not_ours(self: Run, row: ChunkRow, info: BatchInfo, flight: Flight, exc: NotOurs) -> None:
        log.warning("adopted batch %s is not ours (it answers %s); sending chunk %s again", info.id, exc, row.id)
        await self.ledger.disown(row.id, f"batch {info.id} was not ours")
        self._live_rows.discard(row.id)
        fresh = await self.ledger.chunk(row.id)
        parts = await self.replay.parts(fresh)
        self._live_rows.add(row.id)
        flight.remaining -= 1  # this batch is replaced by the one sent now
        await self._resend(fresh, parts, flight)

    async def _token_limited(self: Run, row: ChunkRow, info: BatchInfo, flight: Flight) -> None:
        """OpenAI failed the batch for its model's enqueued-token limit: its requests come back without an
        attempt; nothing more of the model goes until one of its batches in flight has ended (the queue
        holds it), and the limit the message names is learned. The chunk goes again, in parts if it must."""
        self.submitter.claim(info.id)
        self.admission.settled(row.id)
        flight.remaining -= 1
        self._spawn_resend(await self.ledger.chunk(row.id), None, flight)

    async def _batch_failed(self: Run, row: ChunkRow, info: BatchInfo) -> None:
        """The provider failed a batch as a whole (a bad file; one request alone over the token limit): each
        of its requests has used an attempt and waits for the next, as a transient error would; out of
        attempts, it is parked FAILED and the job ends unfinished (a later run gives it one more attempt)."""
        reason = info.error or "no reason given"
        last = orjson.dumps({"batch_id": info.id, "error": reason})
        limit = self.settings.max_attempts
        park = [(cid, request, before + 1, RetryState.PENDING if before + 1 < limit else RetryState.FAILED, last)
                for cid, request, before in await self.replay.requests(row)]
        await self.ledger.record_failed(row.id, park=park, note=reason)
        retrying = sum(1 for p in park if p[3] == RetryState.PENDING)
        log.error("batch %s failed at the provider (%s): %s of its %s request(s) will be sent again",
                  info.id, reason, f"{retrying:,}", f"{len(park):,}")
        self.admission.settled(row.id)
        self._pending_retries = await self.ledger.count_retries(RetryState.PENDING)


class Watched:
    """The provider as the poller sees it, every batch answer shown to `seen` on the way (admission learns
    from a batch that passed validation before it ends)."""

    def __init__(self, provider: Provider, seen: Any):
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
