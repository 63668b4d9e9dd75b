"""What a run does with a batch the provider says has ended: collect it, or send it again.

The poller hands over an ended batch; its room in the provider's queue comes back at once (`ended`),
then it is collected one batch at a time (`collect`, through the `collector`). A batch the provider
failed as a whole for its model's token limit gives its requests back without using an attempt and is
sent again once there is room (`_token_limited`); any other failed batch uses an attempt of each request
(`_batch_failed`). What is to happen next is returned as an `Ending`, which the run acts on in one place:
nothing more, the chunk sent again now (an adopted batch that was not ours), or sent again in a task of
its own (the token limit); and how many requests now wait for another attempt, when that changed.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import orjson

from batch_scheduler.job.admit.admission import Admission
from batch_scheduler.job.collect.collector import Collector, NotOurs
from batch_scheduler.job.input.replay import Part, Replay
from batch_scheduler.job.observe import JobStats, Observer, batch_times
from batch_scheduler.job.send.flights import Flight, InFlight, Tracked
from batch_scheduler.job.send.submitter import Submitter
from batch_scheduler.providers.base import BatchInfo, BatchState
from batch_scheduler.state.ledger import Ledger
from batch_scheduler.state.ledger.sqlite import ChunkRow, ChunkState, RetryState

log = logging.getLogger("batch_scheduler.engine")  # one log for the engine's pieces


class Then(enum.Enum):
    """What is left to do for a chunk whose batch ended."""

    DONE = "done"  # collected, or its requests wait for their next attempt: nothing more for this batch
    RESEND = "resend"  # the chunk is sent again now, its parts read (an adopted batch that was not ours)
    REQUEUE = "requeue"  # the chunk goes again once there is room, in a task of its own (the token limit)


@dataclass(frozen=True, slots=True)
class Ending:
    then: Then = Then.DONE
    row: ChunkRow | None = None  # the chunk to send again (RESEND, REQUEUE)
    flight: Flight | None = None
    parts: list[Part] | None = None  # what to send (RESEND)
    pending_retries: int | None = None  # requests waiting for another attempt now, when this batch changed it


class Endings:
    """Collects the batches of a run as they end; `collecting` counts those under way, and `moved` is set each
    time one ends (its room in the queue came back), gives its slot back, or is collected."""

    def __init__(self, ledger: Ledger, stats: JobStats, admission: Admission, collector: Collector, replay: Replay,
                 submitter: Submitter, observer: Observer, book: InFlight, *, max_attempts: int):
        self._ledger = ledger
        self._stats = stats
        self._admission = admission
        self._queues = admission.queues
        self._collector = collector
        self._replay = replay
        self._submitter = submitter
        self._observer = observer
        self._book = book
        self._max_attempts = max_attempts
        self.collecting = 0  # ended batches being collected
        self.moved = asyncio.Event()

    def ended(self, payload: Tracked, info: BatchInfo) -> None:
        """The provider says the batch ended: its room comes back (unless it failed), its collecting starts."""
        flight = payload.flight
        self._book.ended(info.id)
        flight.unended -= 1
        if flight.ticket is not None and flight.unended <= 0 and info.state is not BatchState.FAILED:
            self._queues.ended(flight.ticket, validated=True)  # it ran: the provider held it
        self.collecting += 1
        self.moved.set()

    def collected(self, _task: asyncio.Task) -> None:
        self.collecting -= 1
        self.moved.set()
        self._admission.changed.set()  # the producer's last wait: nothing in flight and nothing being collected

    def _done_with(self, flight: Flight) -> None:
        """One batch of the flight is no longer at the provider: the flight's slot comes back with its last."""
        flight.remaining -= 1
        if flight.remaining <= 0:
            self._admission.give_slot()
            self.moved.set()  # the producer, waiting to read on, may now

    async def collect(self, payload: Tracked, info: BatchInfo) -> Ending:
        row, flight = payload.row, payload.flight
        released = False

        def downloaded() -> None:
            # every result line is in and the commit begins: nothing more is asked of the provider for this
            # batch, so its slot comes back now and the producer cuts the next chunk while the shards are
            # fsync'd and the ledger commits (a failed commit stops the run)
            nonlocal released
            released = True
            self._done_with(flight)

        try:
            await self._ledger.mark_ended(row.id, info.ended_at)
            if info.state is BatchState.FAILED:
                ending = await self._failed(row, info, flight)
            else:
                ending = await self._succeeded(row, info, flight, downloaded)
            if row.adopted:  # the ledger says now whose it was: a chunk waiting to know looks again
                self._submitter.settled()
            if ending.then is not Then.DONE:
                return ending
            # its results are durable (or it failed for good): what the provider staged for it may go (best
            # effort: a kill before this leaves staged objects, never a lost or repeated answer)
            await self._collector.provider.release(info)
            self._book.live.discard(row.id)
            if not released:
                self._done_with(flight)
            return ending
        except BaseException as exc:
            self._admission.fail(exc)
            raise

    async def _failed(self, row: ChunkRow, info: BatchInfo, flight: Flight) -> Ending:
        ticket, flight.ticket = flight.ticket, None
        alone = ticket is None or ticket.queue.in_flight == ticket.units  # nothing else of ours queued
        requeue = info.queue_full and not (alone and row.take <= 1)
        note = f"batch {info.id}: {info.error}"
        if ticket is not None and info.queue_full:
            await self._queues.refused(ticket, info.stated_limit, token_limit=True, chunk_id=row.id, note=note)
        elif info.queue_full:
            await self._ledger.record_queue_full(row.id, note, counter="token_limit_failures",
                                                 limits=self._queues.learned)
        elif ticket is not None:
            self._queues.ended(ticket, validated=False)
        if requeue:
            return await self._token_limited(row, info, flight)
        return Ending(pending_retries=await self._batch_failed(row, info))

    async def _succeeded(self, row: ChunkRow, info: BatchInfo, flight: Flight,
                         downloaded: Callable[[], None] | None = None) -> Ending:
        try:
            got = await self._collector.collect(row, info, downloaded=downloaded)
        except NotOurs as exc:
            return await self._not_ours(row, info, flight, exc)
        self._stats.finished += got.finals
        self._observer.batch_collected(*batch_times(row.submitted_at, info.ended_at, time.time()))
        self._admission.settled(row.id, got.counts.get("cost_usd", 0.0))
        if flight.weight is not None:
            c = got.counts
            self._queues.observed(flight.weight.estimate, row.take, int(c.get("succeeded", 0)),
                                  c.get("input_tokens", 0) + c.get("cache_write_tokens", 0)
                                  + c.get("cache_read_tokens", 0))
        if got.parked:
            return Ending(pending_retries=await self._ledger.count_retries(RetryState.PENDING))
        return Ending()

    async def _not_ours(self, row: ChunkRow, info: BatchInfo, flight: Flight, exc: NotOurs) -> Ending:
        log.warning("adopted batch %s is not ours (it answers %s); looking again for chunk %s's batch before "
                    "sending it again", info.id, exc, row.id)
        self._submitter.not_ours(info.id, row.id)
        await self._ledger.disown(row.id, f"batch {info.id} was not ours")
        self._book.live.discard(row.id)
        fresh = await self._ledger.chunk(row.id)
        parts = await self._replay.parts(fresh)
        self._book.live.add(row.id)
        flight.remaining -= 1  # this batch is replaced by the one adopted or sent now
        # its lost create's own batch may still be listed (held by no one now): looked for, as after any lost create
        return Ending(Then.RESEND, replace(fresh, state=ChunkState.SUBMITTING,
                                           create_at=fresh.create_at or fresh.intent_at), flight, parts)

    async def _token_limited(self, row: ChunkRow, info: BatchInfo, flight: Flight) -> Ending:
        """OpenAI failed the batch for its model's enqueued-token limit: its requests come back without an
        attempt; nothing more of the model goes until one of its batches in flight has ended (the queue
        holds it), and the limit the message names is learned. The chunk goes again, in parts if it must."""
        self._submitter.claim(info.id)
        self._admission.settled(row.id)
        flight.remaining -= 1
        return Ending(Then.REQUEUE, await self._ledger.chunk(row.id), flight)

    async def _batch_failed(self, row: ChunkRow, info: BatchInfo) -> int:
        """The provider failed a batch as a whole (a bad file; one request alone over the token limit): each
        of its requests has used an attempt and waits for the next, as a transient error would; out of
        attempts, it is parked FAILED and the job ends unfinished (a later run gives it one more attempt).
        Returns how many requests wait for another attempt now."""
        reason = info.error or "no reason given"
        last = orjson.dumps({"batch_id": info.id, "error": reason})
        limit = self._max_attempts
        park = [(cid, request, before + 1, RetryState.PENDING if before + 1 < limit else RetryState.FAILED, last)
                for cid, request, before in await self._replay.requests(row)]
        await self._ledger.record_failed(row.id, park=park, note=reason)
        retrying = sum(1 for p in park if p[3] == RetryState.PENDING)
        log.error("batch %s failed at the provider (%s): %s of its %s request(s) will be sent again",
                  info.id, reason, f"{retrying:,}", f"{len(park):,}")
        self._admission.settled(row.id)
        return await self._ledger.count_retries(RetryState.PENDING)
