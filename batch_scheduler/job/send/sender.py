"""Sending a chunk as a batch: create it, send it again, send it in parts, and what a refusal means.

    producer -> Sender.send_new  (an upload permit, then a task: create)
    endings  -> Sender.resend    (a chunk whose create may not have happened, or must happen again)

Room in the provider's queue is taken before a batch is sent (the producer's or the resend's pass) and
given back when the provider says it ended. A queue-full answer at create (a 429) gives it back without
using an attempt; what then happens to the chunk is a value (`AfterQueueFull`) acted on in one place
(`_submit`): sent again once there is room, sent in parts if it is now known to be heavier than the queue
holds, or left to the sweep after a 413 split. A chunk heavier than a batch should be goes as several
(`parts`). A spend limit at create is a pause: nothing new is sent (`admission.hold`), what is in flight
is still collected, and the run ends with the provider's message (`spend_limit`).

At most UPLOADS batch bodies are built and sent at once: `send_new` waits for an upload permit before
it creates the task, so the producer holds at most a chunk and UPLOADS bodies in memory.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from dataclasses import replace

from batch_scheduler.core import errors
from batch_scheduler.job.admit.admission import Admission, Pass
from batch_scheduler.job.admit.parts import bounds, parts_needed, split_specs
from batch_scheduler.job.admit.queue_budget import Ticket, TooHeavy
from batch_scheduler.job.admit.queues import Weight
from batch_scheduler.job.input.prefix import mark_one_hour
from batch_scheduler.job.input.replay import Part, Replay
from batch_scheduler.job.observe import JobStats
from batch_scheduler.job.send.flights import Flight, InFlight, Tracked
from batch_scheduler.job.send.poller import Poller
from batch_scheduler.job.send.prime import Primer
from batch_scheduler.job.send.realtime import RealtimeLane
from batch_scheduler.job.send.submitter import Outgoing, Submitted, Submitter
from batch_scheduler.providers.base import Provider
from batch_scheduler.state.ledger import Ledger
from batch_scheduler.state.ledger.sqlite import ChunkRow, ChunkState

log = logging.getLogger("batch_scheduler.engine")  # one log for the engine's pieces

Held = tuple[Ticket, Weight]  # the room a chunk holds while its lost create's batch is looked for, and its weight
UPLOADS = 2  # create calls (batch bodies being built and sent) at once; more slots wait at the provider


class AfterQueueFull(enum.Enum):
    """What became of a chunk whose create the provider refused for a full queue."""

    AGAIN = "again"  # there is room again: the same chunk is created again
    IN_PARTS = "sent in parts"  # it is now known to be over what the queue holds: sent as several batches
    SWEPT = "swept"  # after a 413 split: the halves that went are tracked, the sweep at the end sends the rest


class Sender:
    """Creates the batches of a run, each in a named task of the run's task group."""

    def __init__(self, provider: Provider, ledger: Ledger, stats: JobStats, replay: Replay, submitter: Submitter,
                 admission: Admission, poller: Poller, book: InFlight, tg: asyncio.TaskGroup):
        self._provider = provider
        self._ledger = ledger
        self._stats = stats
        self._replay = replay
        self._submitter = submitter
        self._admission = admission
        self._queues = admission.queues
        self._poller = poller
        self._book = book
        self._tg = tg
        self._uploads = asyncio.Semaphore(UPLOADS)
        self.spend_limit: str | None = None  # the provider's message, once a create met the spend limit
        self.lane: RealtimeLane | None = None  # where a chunk goes instead when the route says realtime
        self.primer: Primer | None = None  # which chunks prime a prompt cache (sent marked, by its lane)

    async def send_new(self, out: Outgoing, ticket: Pass) -> None:
        """Send a new chunk once an upload permit is free: the producer waits here, so at most UPLOADS
        batch bodies (and their lines) are in memory at once, not one per slot."""
        self._book.live.add(out.chunk_id)
        await self._uploads.acquire()
        self._tg.create_task(self._submit(out, Flight(0, ticket.ticket, ticket.weight), permit=True),
                             name=f"create chunk {out.chunk_id}")

    def resend_soon(self, row: ChunkRow, parts: list[Part] | None, flight: Flight | None = None) -> None:
        """`resend` in a task of its own (the slot is held)."""
        self._book.live.add(row.id)
        held = self._hold(row, parts)
        self._tg.create_task(self.resend(row, parts, flight, held=held), name=f"resend chunk {row.id}")

    def _hold(self, row: ChunkRow, parts: list[Part] | None) -> Held | None:
        """A chunk whose create may have happened holds its room in the queue at once, as a batch an earlier
        run left does: looking for its batch takes a while, and a new chunk must not take the room that batch
        has at the provider (the new create would meet a full queue). None when its weight is not known
        without reading its requests again (`resend` holds it then, before it looks)."""
        if row.state != ChunkState.SUBMITTING or row.create_at is None:
            return None
        if parts:
            weight = self._queues.weigh([p[0] for p in parts])
        elif parts is None and row.units is not None and row.queue_key:
            weight = Weight(row.queue_key, row.units, row.units, row.take)
        else:
            return None
        return self._queues.restore(weight.key, weight.units), weight

    def track(self, flight: Flight, row: ChunkRow, batch_id: str, created_at: float | None, *,
              now: bool = False) -> None:
        """A batch the provider has: polled until it ends."""
        self._book.add(flight, row.id, batch_id)
        self._poller.track(batch_id, Tracked(flight, row), created_at, now=now)

    async def resend(self, row: ChunkRow, parts: list[Part] | None, flight: Flight | None = None, *,
                     held: Held | None = None) -> None:
        """A chunk whose create may or may not have happened (SUBMITTING, marked at its create call:
        looked for first) or surely did not (PLANNED, or SUBMITTING with no mark: planned, never at its create
        call): sent again once there is room for it (as several batches if it is too heavy for one).

        parts: what to send (see `Replay.parts`); None to read them again. The slot is held.
        held: the room a chunk whose create may have happened holds while its batch is looked for (`_hold`);
        given back if there is no batch to adopt (the create that follows waits for room as any other).
        """
        try:
            if self.lane is not None and self.lane.was_realtime(row):
                await self.lane.lost(row)  # its calls may have been paid; nothing to adopt at the provider
                row = replace(row, state=ChunkState.PLANNED)
            if parts is None:
                parts = await self._replay.parts(row)
            lines = [p[0] for p in parts]
            weight = self._queues.weigh(lines) if parts else None
            if row.state == ChunkState.SUBMITTING and row.create_at is not None and parts and weight is not None:
                held = held or (self._queues.restore(weight.key, weight.units), weight)
                info = await self._submitter.adopt(row.id, len(parts), row.create_at)
                if info is not None:
                    fl = flight or Flight()
                    fl.ticket, fl.weight = held
                    fl.remaining += 1
                    self.track(fl, await self._ledger.chunk(row.id), info.id, info.created_at)
                    return
            if held is not None:  # no batch made: the room it held comes back
                self._queues.given_back(held[0])
            if not parts or weight is None:
                await self._ledger.set_state(row.id, ChunkState.DROPPED, "every request was refused")
                self._admission.give_slot()
                return
            limit = self._queues.part_limit(weight.key)
            if weight.units > limit and len(parts) > 1:
                await self._resend_parts(row, parts, parts_needed(weight.units, limit), flight)
                return
            flight = flight or Flight()
            try:
                flight.ticket, flight.weight = await self._admission.room(weight, splittable=True), weight
            except TooHeavy:  # the queue turned out smaller while it waited
                await self._resend_parts(row, parts, parts_needed(weight.units, self._queues.part_limit(weight.key)),
                                         flight)
                return
            await self._ledger.record_intent(kind=row.kind, take=row.take, nbytes=self._submitter.nbytes(lines),
                                             chunk_id=row.id, est_cost=row.est_cost, units=weight.units,
                                             queue_key=weight.key)
            out = Outgoing(row.id, row.kind, row.root_seq, row.skip, lines, [p[1] for p in parts], row.attempt,
                           time.time(), [p[2] for p in parts], row.take)
        except BaseException as exc:
            self._admission.fail(exc)
            raise
        await self._submit(out, flight)

    async def _resend_parts(self, row: ChunkRow, parts: list[Part], n_parts: int, flight: Flight | None) -> None:
        """A chunk to send again that is too heavy for one batch now (the queue turned out smaller)."""
        ranges = bounds(len(parts), n_parts)
        sizes = [self._submitter.nbytes([p[0] for p in parts[a:b]]) for a, b in ranges]
        specs = split_specs(ranges, [p[2] for p in parts], [p[1] for p in parts], sizes, skip=row.skip,
                            take=row.take, from_input=self._replay.from_input(row))
        child_ids = await self._ledger.record_split(row.id, specs)
        self._book.live.update(child_ids)
        self._book.live.discard(row.id)
        # each part is a flight of its own; the first takes over this row's slot unless the flight that
        # holds it still has other batches (the other half of a 413 split)
        reuse = flight is None or flight.remaining <= 0
        log.info("chunk %s: sent again as %s batches, to fit the provider's queue", row.id, len(child_ids))
        for i, (child_id, (a, b)) in enumerate(zip(child_ids, ranges, strict=True)):
            if i or not reuse:
                await self._admission.take_slot()
            await self.resend(await self._ledger.chunk(child_id), parts[a:b])

    async def _submit(self, out: Outgoing, flight: Flight, *, permit: bool = False) -> None:
        priming = self.primer.chunks.get(out.chunk_id) if self.primer is not None else None
        if priming is not None:  # a priming request: its cache write lives an hour, and it goes by its lane
            out.lines = [mark_one_hour(x) for x in out.lines]
        if self.lane is not None and (priming == "realtime" or (priming is None and self.lane.wants(out))):
            await self._realtime(out, flight, permit=permit)
            return

        def give_permit() -> None:  # its create is done, or it waits for a lost create's batch: others may upload
            nonlocal permit
            if permit:
                self._uploads.release()
                permit = False

        try:
            while True:
                try:
                    try:
                        done = await self._submitter.submit(out, on_wait=give_permit)
                    except errors.SpendLimited as err:
                        self._spend_limited(out, err)  # the chunk is PLANNED again: the next run sends it
                        done = []
                    finally:
                        give_permit()
                except errors.QueueFull as err:
                    done = getattr(err, "sent", None) or []
                    then = await self._queue_full_at_create(out, flight, err, split=bool(done))
                    if then is AfterQueueFull.IN_PARTS:
                        return
                    if then is AfterQueueFull.SWEPT:
                        break
                    await self._uploads.acquire()
                    permit = True
                    continue
                break
            if self._stats.first_submit_s is None:
                self._stats.first_submit_s = time.monotonic() - self._stats.started
            self._stats.submitted += sum(d.n for d in done)
            if not done:
                if flight.ticket is not None:
                    self._queues.ended(flight.ticket, validated=False)
                if flight.remaining <= 0:
                    self._admission.give_slot()
                return
            await self._sent(flight, done)
        except BaseException as exc:
            self._admission.fail(exc)
            raise

    async def _realtime(self, out: Outgoing, flight: Flight, *, permit: bool) -> None:
        """The chunk goes through the realtime lane: its room in the batch queue and its upload permit back."""
        assert self.lane is not None
        if permit:
            self._uploads.release()
        if flight.ticket is not None:
            self._queues.ended(flight.ticket, validated=False)
            flight.ticket = None
        if self._stats.first_submit_s is None:
            self._stats.first_submit_s = time.monotonic() - self._stats.started
        try:
            await self.lane.send(out, flight)
        except BaseException as exc:
            self._admission.fail(exc)
            raise

    async def _sent(self, flight: Flight, done: list[Submitted]) -> None:
        flight.remaining += len(done)
        flight.unended += len(done)
        for d in done:
            self.track(flight, await self._ledger.chunk(d.chunk_id), d.info.id, d.info.created_at)
        if flight.ticket is not None and all(d.info.validated for d in done):
            await self._queues.accepted(flight.ticket)

    async def _queue_full_at_create(self, out: Outgoing, flight: Flight, err: errors.QueueFull, *, split: bool
                                    ) -> AfterQueueFull:
        """A 429 for the queue: no batch was made and no attempt used. The room comes back and the learner
        is told; once there is room again the same chunk is sent again, or in parts if it is now known to be
        over what the queue holds. After a 413 split the halves that went are tracked and the rest is sent
        by the sweep at the end."""
        ticket, flight.ticket = flight.ticket, None
        note = f"queue full at create: {err}"
        if ticket is not None:
            await self._queues.refused(ticket, err.stated_limit, token_limit=False, chunk_id=out.chunk_id, note=note,
                                       jobs=err.jobs)
        else:
            await self._ledger.set_state(out.chunk_id, ChunkState.PLANNED, note)
        if split:
            return AfterQueueFull.SWEPT
        assert flight.weight is not None
        row = await self._ledger.chunk(out.chunk_id)
        try:
            flight.ticket = await self._admission.room(flight.weight, splittable=True)
        except TooHeavy:
            parts = list(zip(out.lines, out.ids, out.raw_index or [], strict=True))
            await self.resend(row, parts, flight)
            return AfterQueueFull.IN_PARTS
        await self._ledger.record_intent(kind=out.kind, take=row.take, nbytes=self._submitter.nbytes(out.lines),
                                         chunk_id=out.chunk_id, est_cost=row.est_cost, units=flight.weight.units,
                                         queue_key=flight.weight.key)
        out.intent_at = time.time()
        return AfterQueueFull.AGAIN

    def _spend_limited(self, out: Outgoing, err: errors.SpendLimited) -> None:
        """Stop sending at once; what is in flight is still polled and collected."""
        self._admission.held_back += len(out.lines)
        if self.spend_limit is None:
            self.spend_limit = self._provider.http.redact(str(err))
            self._admission.hold = f"the provider's spend limit is reached ({self.spend_limit})"
            log.error("%s: no new batch is sent; the %s batch(es) in flight are still collected",
                      self._admission.hold, f"{max(0, self._admission.in_flight - 1):,}")
