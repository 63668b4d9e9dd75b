"""One run of a job: input to shards inside one task group, resumable at any instant.

    reader -> batcher -> [admission] -> submitter -> poller -> collector -> shards + ledger
                          (a slot,      (create)     (one loop) (one batch at a time; see `ended`)
                           queue room)

Room in the provider's queue (requests, or estimated tokens per model: see `admission`) is taken
before a batch is sent and given back when the provider says it ended; a queue-full answer (a 429 at
create, an OpenAI token-limit failure) gives it back and the chunk is sent again once there is room,
without using an attempt. A chunk heavier than a batch should be goes as several (`parts`). A slot
(--concurrency) is taken before a chunk is sent and given back once its results are durable. The
producer waits for both, so at most a chunk and UPLOADS batch bodies are in memory.

The producer reads the input once per run; a resumed run reads it again from the start (the cut is
deterministic) and skips every chunk the ledger already knows. What a previous run left is picked up
first: its batches in flight are polled again (holding their room at once), its chunks whose create
may not have happened are sent again (after looking for the batch); chunks left planned that nothing
sends (a 413 split a full queue interrupted) are swept up at the end. Requests parked for another
attempt go once their wait is over. A spend limit at create is a pause: nothing new is sent, what is
in flight is still collected, and the run ends with the provider's message (`spend_limit`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncGenerator
from contextlib import aclosing

from batch_scheduler.core import errors
from batch_scheduler.job.admit.admission import Admission, Pass
from batch_scheduler.job.admit.parts import bounds, parts_needed, split_specs
from batch_scheduler.job.admit.queue_budget import TooHeavy
from batch_scheduler.job.admit.queues import Weight
from batch_scheduler.job.collect.collector import Collector
from batch_scheduler.job.collect.ended import Endings, Flight, Tracked, Watched
from batch_scheduler.job.input.batcher import BODY_WRAPPER_BYTES, Chunk, chunk_digest, cut_chunks, one_lane
from batch_scheduler.job.input.reader import Block, span_blocks
from batch_scheduler.job.input.replay import Part, Replay, changed_message
from batch_scheduler.job.input.validate import Validator
from batch_scheduler.job.job import Job
from batch_scheduler.job.observe import Observer
from batch_scheduler.job.send.poller import Poller
from batch_scheduler.job.send.submitter import Outgoing, Submitted, Submitter
from batch_scheduler.providers.base import BatchInfo, BatchState, Provider
from batch_scheduler.state.sqlite import ChunkKind, ChunkRow, ChunkState, RetryState

log = logging.getLogger("batch_scheduler.engine")  # one log for the engine's pieces

UPLOADS = 2  # create calls (batch bodies being built and sent) at once; more slots wait at the provider


class Run(Endings):
    def __init__(self, job: Job, provider: Provider, replay: Replay, submitter: Submitter, collector: Collector,
                 admission: Admission, tg: asyncio.TaskGroup, *, pending_retries: int,
                 observer: Observer | None = None):
        self.job = job
        self.settings = s = job.settings
        self.ledger = job.ledger
        self.stats = job.stats
        self.provider = provider
        self.replay = replay
        self.submitter = submitter
        self.collector = collector
        self.admission = admission
        self._tg = tg
        self.observer = observer or Observer()
        self.validator = Validator(provider, s.batch_bytes - BODY_WRAPPER_BYTES)
        self.queues = admission.queues
        self.poller = Poller(Watched(provider, self._seen), self._on_ended, poll_min_s=s.poll_min_s,
                             poll_max_s=s.poll_max_s, not_found_grace_s=s.not_found_grace_s)
        self._flights: dict[str, Flight] = {}  # batch id -> its flight, while the provider has it
        self._pending_retries = pending_retries
        self.spend_limit: str | None = None  # the provider's message, once a create met the spend limit
        self._live_rows: set[int] = set()  # chunks this run is sending or tracking
        self._uploads = asyncio.Semaphore(UPLOADS)
        self._collecting = 0  # ended batches being collected
        self._collect_idle = asyncio.Event()
        self._collect_idle.set()
        self.input_error: errors.InputError | None = None  # why reading stopped before the end of the input

    async def go(self) -> None:
        """Send every chunk, and collect every batch, this run can."""
        poll_task = self._tg.create_task(self.poller.run())
        try:
            await self._produce()
        finally:
            self.poller.stop()
        await poll_task

    # -- producer -------------------------------------------------------------------------------

    async def _produce(self) -> None:
        ledger, s, job, admission = self.ledger, self.settings, self.job, self.admission
        await self._left_by_earlier_runs()
        counting = self._count_lines(span_blocks(job.sources, (0, 0, 1), None))
        try:
            async with aclosing(cut_chunks(counting, self.validator, job.rejects, batch_size=s.batch_size,
                                           batch_bytes=s.batch_bytes, overhead=self.provider.body_overhead,
                                           unit_of=lambda fi: job.sources[fi].unit)) as chunks:
                async for chunk in chunks:
                    self.stats.accepted += chunk.n
                    self.stats.rejected = job.rejects.count
                    await self._input_chunk(chunk)
                    while self._pending_retries >= s.batch_size and not admission.hold:
                        if not await self._retry_chunk(full_only=True):
                            break
        except errors.InputError as err:  # the input cannot be read on (a cut .gz): what was sent is collected
            self.input_error = err
        else:
            self.stats.reading_done = True
            await ledger.record_accepted_total(self.stats.accepted)
        self.stats.rejected = job.rejects.count
        job.rejects.flush()
        while True:
            admission.check()
            wait_s: float | None = None
            if self._pending_retries > 0 and not admission.hold:
                if await self._retry_chunk():
                    continue
                wait_s = await self._until_next_retry()
            if admission.in_flight == 0 and wait_s is None:
                if admission.hold or self.input_error is not None or not await self._unsent():
                    return
                continue
            admission.changed.clear()
            try:
                await asyncio.wait_for(admission.changed.wait(), wait_s)
            except TimeoutError:
                pass  # the next parked request's wait is over

    async def _until_next_retry(self) -> float | None:
        """Seconds until the next parked request may go; None when none is pending any more."""
        at = await self.ledger.next_retry_at()
        if at is None:
            self._pending_retries = 0
            return None
        return max(0.0, at - time.time()) + 0.01

    async def _unsent(self) -> bool:
        """Send the chunks left planned that nothing else sends (a 413 split a full queue cut short), if any."""
        rows = [r for r in await self.ledger.chunks_in(ChunkState.PLANNED, ChunkState.SUBMITTING)
                if r.id not in self._live_rows]
        for row in rows:
            await self.admission.take_slot()
            self._spawn_resend(row, None)
        return bool(rows)

    async def _left_by_earlier_runs(self) -> None:
        """Batches in flight are polled again (they hold their room in the queue at once); retry chunks
        whose create may not have happened are sent again (input chunks are, when the producer cuts them
        again)."""
        ledger = self.ledger
        if self.settings.max_cost_usd is not None:
            # what a previous run sent (or may have) counts against the cap until it is collected; a run
            # without a cap recorded no estimate, so it is made now from the chunk's requests
            for row in await ledger.chunks_in(ChunkState.SUBMITTED, ChunkState.SUBMITTING, ChunkState.PLANNED):
                est = row.est_cost or self.admission.budget.estimate(
                    [r for _, r, _ in await self.replay.requests(row)])
                self.admission.sent(row.id, est)
        for row in await ledger.chunks_in(ChunkState.SUBMITTED):
            await self.admission.take_slot()
            weight = await self._weight_of(row)
            flight = Flight(1, self.queues.restore(weight.key, weight.units), weight)
            self._track(flight, row, row.batch_id or "", None, now=True)
        for row in await ledger.chunks_in(ChunkState.SUBMITTING, ChunkState.PLANNED):
            if not self.replay.from_input(row):
                await self.admission.take_slot()
                self._spawn_resend(row, None)

    async def _weight_of(self, row: ChunkRow) -> Weight:
        """What a chunk an earlier run sent weighs in the queue (as it recorded; weighed again if it did not)."""
        if row.units is not None and row.queue_key:
            return Weight(row.queue_key, row.units, row.units, row.take)
        if self.queues.measure.unit == "requests":
            return Weight("requests", row.take, row.take, row.take)
        return self.queues.weigh([r for _, r, _ in await self.replay.requests(row)])

    async def _count_lines(self, blocks: AsyncGenerator[Block, None]) -> AsyncGenerator[Block, None]:
        async with aclosing(blocks):
            async for b in blocks:
                if self._collecting and not self._could_send_now():
                    # Ended batches first while the next batch would wait anyway: results made durable
                    # before more input is read, so a batch's delay to disk is its own download, not a queue
                    # behind new work. With room in the provider's queue and a slot free, refilling comes first.
                    await self._collect_idle.wait()
                if not self.stats.lines_read and b.lines:
                    self._expect_lines(b)
                self.stats.lines_read += len(b.lines)
                yield b

    def _could_send_now(self) -> bool:
        return self.admission.in_flight < self.settings.concurrency and self.queues.has_room()

    def _expect_lines(self, first: Block) -> None:
        """From the first block's line length and the inputs' sizes, about how many lines are coming."""
        sources = self.job.sources
        raw = [len(x) + 1 for x in first.lines if type(x) is bytes]
        plain = [src.path for src in sources if src.unit == "bytes" and not src.path.endswith(".gz")
                 and os.path.isfile(src.path)]  # not a bucket's object
        if raw and plain and len(plain) == len(sources):
            total = sum(os.path.getsize(p) for p in plain)
            self.stats.expected_lines = int(total / (sum(raw) / len(raw)))
            self.validator.expect(self.stats.expected_lines)

    async def _input_chunk(self, chunk: Chunk) -> None:
        ledger, admission = self.ledger, self.admission
        rows = await ledger.chunks_of_root(chunk.seq)
        span = (chunk.start_file, chunk.start_pos, chunk.start_line, chunk.end_file, chunk.end_pos)
        if admission.hold:
            if not rows or any(r.state in (ChunkState.SUBMITTING, ChunkState.PLANNED) for r in rows):
                admission.held_back += chunk.n
            return
        if not rows:
            weight = self.queues.weigh(chunk.lines)
            limit = self.queues.part_limit(weight.key)
            if weight.units > limit and chunk.n > 1:
                await self._input_parts(chunk, span, parts_needed(weight.units, limit))
                return
            try:
                ticket = await admission.admit(chunk.lines, weight, splittable=True)
            except TooHeavy:  # the queue turned out smaller while it waited
                await self._input_parts(chunk, span, parts_needed(weight.units, self.queues.part_limit(weight.key)))
                return
            if ticket is None:
                admission.held_back += chunk.n
                return
            digest = chunk_digest(chunk.lines)  # on the loop, like the cut itself
            chunk_id = await ledger.record_intent(kind=ChunkKind.INPUT, root_seq=chunk.seq, take=chunk.n,
                                                  nbytes=chunk.nbytes, span=span, est_cost=ticket.estimate_usd,
                                                  skipped=chunk.skipped, digest=digest, ids=chunk.ids,
                                                  units=weight.units, queue_key=weight.key)
            admission.sent(chunk_id, ticket.estimate_usd)
            out = Outgoing(chunk_id, ChunkKind.INPUT, chunk.seq, 0, chunk.lines, chunk.ids, 1, time.time())
            await self._spawn_submit(out, ticket)
            return
        first = rows[0]
        if (first.start_file, first.start_pos, first.start_line, first.end_file, first.end_pos) != span \
                and first.skip == 0:
            raise errors.JobMismatch(f"chunk {chunk.seq} of the input no longer matches the ledger; the input "
                                     f"or the options changed. Start fresh with another --out")
        known = next((r.digest for r in rows if r.digest), None)
        if known is not None and chunk_digest(chunk.lines) != known:
            raise errors.JobMismatch(changed_message(self.job.sources[chunk.start_file].path, chunk.start_line))
        refused = await ledger.api_rejected(chunk.seq)
        for row in rows:
            if row.id in self._live_rows or row.state not in (ChunkState.SUBMITTING, ChunkState.PLANNED):
                continue
            parts = [(chunk.lines[i], chunk.ids[i], i) for i in range(row.skip, min(row.skip + row.take, chunk.n))
                     if chunk.ids[i] not in refused]
            await admission.take_slot()
            self._spawn_resend(row, parts)

    async def _input_parts(self, chunk: Chunk, span: tuple[int, int, int, int, int], n_parts: int) -> None:
        """A new chunk too heavy for one batch: recorded as split into parts, each sent as its own batch."""
        ledger, admission, overhead = self.ledger, self.admission, self.provider.body_overhead
        parent = await ledger.record_intent(kind=ChunkKind.INPUT, root_seq=chunk.seq, take=chunk.n,
                                            nbytes=chunk.nbytes, span=span, skipped=chunk.skipped,
                                            digest=chunk_digest(chunk.lines), ids=chunk.ids)
        ranges = bounds(chunk.n, n_parts)
        sizes = [BODY_WRAPPER_BYTES + sum(len(x) + overhead(len(x)) for x in chunk.lines[a:b]) for a, b in ranges]
        specs = split_specs(ranges, list(range(chunk.n)), chunk.ids, sizes, skip=0, take=chunk.n, from_input=True)
        child_ids = await ledger.record_split(parent, specs)
        self._live_rows.update(child_ids)
        log.info("chunk %s: %s requests sent as %s batches, to fit the provider's queue", parent,
                 f"{chunk.n:,}", len(child_ids))
        for i, (child_id, (a, b), (_, _, nbytes, _)) in enumerate(zip(child_ids, ranges, specs, strict=True)):
            lines = chunk.lines[a:b]
            weight = self.queues.weigh(lines)
            ticket = await admission.admit(lines, weight)
            if ticket is None:
                admission.held_back += chunk.n - a
                self._live_rows.difference_update(child_ids[i:])
                return
            await ledger.record_intent(kind=ChunkKind.INPUT, take=b - a, nbytes=nbytes, chunk_id=child_id,
                                       est_cost=ticket.estimate_usd, units=weight.units, queue_key=weight.key)
            admission.sent(child_id, ticket.estimate_usd)
            out = Outgoing(child_id, ChunkKind.INPUT, chunk.seq, a, lines, chunk.ids[a:b], 1, time.time())
            await self._spawn_submit(out, ticket)

    async def _retry_chunk(self, *, full_only: bool = False) -> bool:
        """Send one batch of the parked requests whose wait is over; whether one was sent (or should be
        tried again at once).

        full_only: only a full batch (while input is still being read, small ones wait for the end)."""
        s = self.settings
        pending = one_lane(await self.ledger.pending_retries(s.batch_size), self.provider.lane_of)
        if not pending:
            self._pending_retries = await self.ledger.count_retries(RetryState.PENDING)
            return False
        lines, ids, nbytes = list[bytes](), list[str](), BODY_WRAPPER_BYTES
        attempt = 1
        full = len(pending) == s.batch_size
        for cid, request, attempts in pending:
            size = len(request) + self.provider.body_overhead(len(request))
            if lines and nbytes + size > s.batch_bytes:
                full = True
                break
            lines.append(request)
            ids.append(cid)
            nbytes += size
            attempt = max(attempt, attempts + 1)
        if full_only and not full:
            return False
        weight = self.queues.weigh(lines)
        limit = self.queues.part_limit(weight.key)
        if weight.units > limit and len(lines) > 1:  # fewer requests, so that the batch fits the queue
            keep = max(1, len(lines) * limit // weight.units)
            lines, ids = lines[:keep], ids[:keep]
            nbytes = BODY_WRAPPER_BYTES + sum(len(x) + self.provider.body_overhead(len(x)) for x in lines)
            weight = self.queues.weigh(lines)
        try:
            ticket = await self.admission.admit(lines, weight, splittable=True)
        except TooHeavy:
            return True  # the queue turned out smaller while it waited: the next call takes fewer
        if ticket is None:
            return False
        chunk_id = await self.ledger.record_intent(kind=ChunkKind.RETRY, take=len(lines), nbytes=nbytes,
                                                   attempt=attempt, retry_ids=ids, est_cost=ticket.estimate_usd,
                                                   units=weight.units, queue_key=weight.key)
        self.admission.sent(chunk_id, ticket.estimate_usd)
        self._pending_retries = max(0, self._pending_retries - len(lines))
        await self._spawn_submit(Outgoing(chunk_id, ChunkKind.RETRY, None, 0, lines, ids, attempt, time.time()),
                                 ticket)
        return True

    # -- submitting -----------------------------------------------------------------------------

    async def _spawn_submit(self, out: Outgoing, ticket: Pass) -> None:
        """Send a new chunk once an upload permit is free: the producer waits here, so at most UPLOADS
        batch bodies (and their lines) are in memory at once, not one per slot."""
        self._live_rows.add(out.chunk_id)
        await self._uploads.acquire()
        self._tg.create_task(self._submit(out, Flight(0, ticket.ticket, ticket.weight), permit=True))

    def _spawn_resend(self, row: ChunkRow, parts: list[Part] | None, flight: Flight | None = None) -> None:
        self._live_rows.add(row.id)
        self._tg.create_task(self._resend(row, parts, flight))

    async def _resend(self, row: ChunkRow, parts: list[Part] | None, flight: Flight | None = None) -> None:
        """A chunk whose create may or may not have happened (SUBMITTING) or surely did not (PLANNED):
        sent again once there is room for it (as several batches if it is too heavy for one).

        parts: what to send (see `Replay.parts`); None to read them again. The slot is held.
        """
        try:
            if parts is None:
                parts = await self.replay.parts(row)
            lines = [p[0] for p in parts]
            weight = self.queues.weigh(lines) if parts else None
            if row.state == ChunkState.SUBMITTING and parts and weight is not None:
                info = await self.submitter.adopt(row.id, len(parts), row.intent_at)
                if info is not None:
                    fl = flight or Flight()
                    fl.ticket, fl.weight = self.queues.restore(weight.key, weight.units), weight
                    fl.remaining += 1
                    self._track(fl, await self.ledger.chunk(row.id), info.id, info.created_at)
                    return
            if not parts or weight is None:
                await self.ledger.set_state(row.id, ChunkState.DROPPED, "every request was refused")
                self.admission.give_slot()
                return
            limit = self.queues.part_limit(weight.key)
            if weight.units > limit and len(parts) > 1:
                await self._resend_parts(row, parts, parts_needed(weight.units, limit), flight)
                return
            flight = flight or Flight()
            try:
                flight.ticket, flight.weight = await self.admission.room(weight, splittable=True), weight
            except TooHeavy:  # the queue turned out smaller while it waited
                await self._resend_parts(row, parts, parts_needed(weight.units, self.queues.part_limit(weight.key)),
                                         flight)
                return
            await self.ledger.record_intent(kind=row.kind, take=row.take, nbytes=self.submitter.nbytes(lines),
                                            chunk_id=row.id, est_cost=row.est_cost, units=weight.units,
                                            queue_key=weight.key)
            out = Outgoing(row.id, row.kind, row.root_seq, row.skip, lines, [p[1] for p in parts], row.attempt,
                           time.time(), [p[2] for p in parts], row.take)
        except BaseException as exc:
            self.admission.fail(exc)
            raise
        await self._submit(out, flight)

    async def _resend_parts(self, row: ChunkRow, parts: list[Part], n_parts: int, flight: Flight | None) -> None:
        """A chunk to send again that is too heavy for one batch now (the queue turned out smaller)."""
        ranges = bounds(len(parts), n_parts)
        sizes = [self.submitter.nbytes([p[0] for p in parts[a:b]]) for a, b in ranges]
        specs = split_specs(ranges, [p[2] for p in parts], [p[1] for p in parts], sizes, skip=row.skip,
                            take=row.take, from_input=self.replay.from_input(row))
        child_ids = await self.ledger.record_split(row.id, specs)
        self._live_rows.update(child_ids)
        self._live_rows.discard(row.id)
        # each part is a flight of its own; the first takes over this row's slot unless the flight that
        # holds it still has other batches (the other half of a 413 split)
        reuse = flight is None or flight.remaining <= 0
        log.info("chunk %s: sent again as %s batches, to fit the provider's queue", row.id, len(child_ids))
        for i, (child_id, (a, b)) in enumerate(zip(child_ids, ranges, strict=True)):
            if i or not reuse:
                await self.admission.take_slot()
            await self._resend(await self.ledger.chunk(child_id), parts[a:b])

    async def _submit(self, out: Outgoing, flight: Flight, *, permit: bool = False) -> None:
        try:
            while True:
                try:
                    try:
                        done = await self.submitter.submit(out)
                    except errors.SpendLimited as err:
                        self._spend_limited(out, err)  # the chunk is PLANNED again: the next run sends it
                        done = []
                    finally:
                        if permit:
                            self._uploads.release()
                            permit = False
                except errors.QueueFull as err:
                    done = getattr(err, "sent", None) or []
                    then = await self._queue_full_at_create(out, flight, err, split=bool(done))
                    if then == "sent in parts":
                        return
                    if then == "swept":
                        break
                    await self._uploads.acquire()
                    permit = True
                    continue
                break
            if self.stats.first_submit_s is None:
                self.stats.first_submit_s = time.monotonic() - self.stats.started
            self.stats.submitted += sum(d.n for d in done)
            if not done:
                if flight.ticket is not None:
                    self.queues.ended(flight.ticket, validated=False)
                if flight.remaining <= 0:
                    self.admission.give_slot()
                return
            await self._sent(flight, done)
        except BaseException as exc:
            self.admission.fail(exc)
            raise

    async def _sent(self, flight: Flight, done: list[Submitted]) -> None:
        flight.remaining += len(done)
        flight.unended += len(done)
        for d in done:
            self._track(flight, await self.ledger.chunk(d.chunk_id), d.info.id, d.info.created_at)
        if flight.ticket is not None and all(d.info.validated for d in done):
            await self.queues.accepted(flight.ticket)

    async def _queue_full_at_create(self, out: Outgoing, flight: Flight, err: errors.QueueFull, *, split: bool
                                    ) -> str:
        """A 429 for the queue: no batch was made and no attempt used. The room comes back and the learner
        is told; once there is room again the same chunk is sent again ("again"), or in parts if it is now
        known to be over what the queue holds ("sent in parts"). After a 413 split the halves that went are
        tracked and the rest is sent by the sweep at the end ("swept")."""
        ticket, flight.ticket = flight.ticket, None
        note = f"queue full at create: {err}"
        if ticket is not None:
            await self.queues.refused(ticket, err.stated_limit, token_limit=False, chunk_id=out.chunk_id, note=note)
        else:
            await self.ledger.set_state(out.chunk_id, ChunkState.PLANNED, note)
        if split:
            return "swept"
        assert flight.weight is not None
        row = await self.ledger.chunk(out.chunk_id)
        try:
            flight.ticket = await self.admission.room(flight.weight, splittable=True)
        except TooHeavy:
            parts = list(zip(out.lines, out.ids, out.raw_index or [], strict=True))
            await self._resend(row, parts, flight)
            return "sent in parts"
        await self.ledger.record_intent(kind=out.kind, take=row.take, nbytes=self.submitter.nbytes(out.lines),
                                        chunk_id=out.chunk_id, est_cost=row.est_cost, units=flight.weight.units,
                                        queue_key=flight.weight.key)
        out.intent_at = time.time()
        return "again"

    def _spend_limited(self, out: Outgoing, err: errors.SpendLimited) -> None:
        """Stop sending at once; what is in flight is still polled and collected."""
        self.admission.held_back += len(out.lines)
        if self.spend_limit is None:
            self.spend_limit = self.provider.http.redact(str(err))
            self.admission.hold = f"the provider's spend limit is reached ({self.spend_limit})"
            log.error("%s: no new batch is sent; the %s batch(es) in flight are still collected",
                      self.admission.hold, f"{max(0, self.admission.in_flight - 1):,}")

    def _track(self, flight: Flight, row: ChunkRow, batch_id: str, created_at: float | None, *,
               now: bool = False) -> None:
        self._live_rows.add(row.id)
        flight.unended = max(flight.unended, 1)
        self._flights[batch_id] = flight
        self.poller.track(batch_id, Tracked(flight, row), created_at, now=now)

    def _seen(self, info: BatchInfo) -> None:
        """Every answer the poller gets: a batch the provider has validated holds its room for good
        (OpenAI: the token limit is checked while validating)."""
        flight = self._flights.get(info.id)
        if flight is not None and info.validated and flight.ticket is not None and not flight.ticket.confirmed \
                and info.state is not BatchState.FAILED:
            self._tg.create_task(self.queues.accepted(flight.ticket))
