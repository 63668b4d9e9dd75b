"""What a run sends next: the input read and cut into chunks, what earlier runs left, parked requests.

    reader -> validate -> batcher (cut) -> [admission: a slot, queue room] -> sender

The producer reads the input once per run; a resumed run reads it again from the start (the cut is
deterministic) and skips every chunk the ledger already knows. What a previous run left is picked up
first: its batches in flight are polled again (holding their room at once), its chunks whose create
may not have happened are sent again (after looking for the batch); chunks left planned that nothing
sends (a 413 split a full queue interrupted) are swept up at the end. Requests parked for another
attempt go once their wait is over (`pending_retries`, kept up to date by the run as batches end). A
chunk heavier than a batch should be is recorded as split into parts, each sent as its own batch.

The producer waits for a slot and room in the queue before each chunk, and for an upload permit
(`sender.send_new`), so at most a chunk and a few batch bodies are in memory. While ended batches are
being collected and the next batch would wait anyway, it reads no further (`_count_lines`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncGenerator
from contextlib import aclosing

from batch_scheduler.core import errors
from batch_scheduler.job.admit.admission import Admission
from batch_scheduler.job.admit.parts import bounds, parts_needed, split_specs
from batch_scheduler.job.admit.queue_budget import TooHeavy
from batch_scheduler.job.admit.queues import Weight
from batch_scheduler.job.collect.ended import Endings
from batch_scheduler.job.input.batcher import BODY_WRAPPER_BYTES, Chunk, chunk_digest, cut_chunks, one_lane
from batch_scheduler.job.input.prefix import job_lane_of, priming_via
from batch_scheduler.job.input.reader import Block, span_blocks
from batch_scheduler.job.input.replay import Replay, changed_message
from batch_scheduler.job.input.validate import Validator
from batch_scheduler.job.job import Job
from batch_scheduler.job.send.flights import Flight, InFlight
from batch_scheduler.job.send.prime import Primer
from batch_scheduler.job.send.sender import Sender
from batch_scheduler.job.send.submitter import Outgoing
from batch_scheduler.providers.base import Provider
from batch_scheduler.state.ledger.sqlite import ChunkKind, ChunkRow, ChunkState, RetryState

log = logging.getLogger("batch_scheduler.engine")  # one log for the engine's pieces


def _digest(chunk: Chunk, like: str | None = None) -> str:
    """The chunk's digest (see chunk_digest; `like`: hashed as that recorded digest was); the input's blocks it
    held for it are let go (a chunk sent in parts or waiting for its priming may live on a while)."""
    digest = chunk_digest(chunk.lines, chunk.pieces, like=like)
    chunk.pieces = None
    return digest


async def one_ahead(chunks: AsyncGenerator[Chunk, None]) -> AsyncGenerator[Chunk, None]:
    """The chunks in order, the next one read and cut (in a task of its own) while the one before waits to be
    sent: for room in the queue above all, at the start, while the first batches' creates are answered one
    after another. One chunk more in memory at most; a failure of the cut comes where its chunk would have."""
    ahead = asyncio.ensure_future(anext(chunks, None))
    try:
        while (chunk := await ahead) is not None:
            ahead = asyncio.ensure_future(anext(chunks, None))
            yield chunk
    finally:
        if not ahead.done():
            ahead.cancel()
            await asyncio.wait([ahead])
        if not ahead.cancelled():
            ahead.exception()  # said where it came (above), or not at all once the producer stopped
        await chunks.aclose()


class Producer:
    """Decides what the run sends next and hands it to the sender, until nothing is left to send."""

    def __init__(self, job: Job, provider: Provider, replay: Replay, validator: Validator, admission: Admission,
                 sender: Sender, endings: Endings, book: InFlight, *, pending_retries: int):
        self._job = job
        self._settings = job.settings
        self._ledger = job.ledger
        self._stats = job.stats
        self._provider = provider
        self._replay = replay
        self._validator = validator
        self._admission = admission
        self._queues = admission.queues
        self._sender = sender
        self._endings = endings
        self._book = book
        self.pending_retries = pending_retries  # requests parked for another attempt, as last counted
        self.input_error: errors.InputError | None = None  # why reading stopped before the end of the input
        self.primer = Primer(job.ledger, priming_via(provider), provider.body_field)

    async def run(self) -> None:
        """Send every chunk this run can: what earlier runs left, the input, parked requests, the sweep."""
        ledger, s, job, admission = self._ledger, self._settings, self._job, self._admission
        await self._left_by_earlier_runs()
        counting = self._count_lines(span_blocks(job.sources, (0, 0, 1), None))
        try:
            async with aclosing(one_ahead(cut_chunks(counting, self._validator, job.rejects, batch_size=s.batch_size,
                                                     batch_bytes=s.batch_bytes, overhead=self._provider.body_overhead,
                                                     unit_of=lambda fi: job.sources[fi].unit))) as chunks:
                async for chunk in chunks:
                    self._stats.accepted += chunk.n
                    self._stats.rejected = job.rejects.count
                    await self._input_chunk(chunk)
                    while self.pending_retries >= s.batch_size and not admission.hold:
                        if not await self._retry_chunk(full_only=True):
                            break
        except errors.InputError as err:  # the input cannot be read on (a cut .gz): what was sent is collected
            self.input_error = err
        else:
            self._stats.reading_done = True
            await ledger.record_accepted_total(self._stats.accepted)
        self._stats.rejected = job.rejects.count
        job.rejects.flush()
        while True:
            admission.check()
            wait_s: float | None = None
            if self.pending_retries > 0 and not admission.hold:
                if await self._retry_chunk():
                    continue
                wait_s = await self._until_next_retry()
            if admission.in_flight == 0 and not self._endings.collecting and wait_s is None:
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
        at = self._stats.next_retry_at = await self._ledger.next_retry_at()
        if at is None:
            self.pending_retries = self._stats.waiting_retry = 0
            return None
        self._stats.waiting_retry = self.pending_retries
        return max(0.0, at - time.time()) + 0.01

    async def _unsent(self) -> bool:
        """Send the chunks left planned that nothing else sends (a 413 split a full queue cut short), if any."""
        rows = [r for r in await self._ledger.chunks_in(ChunkState.PLANNED, ChunkState.SUBMITTING)
                if r.id not in self._book.live]
        for row in rows:
            await self._admission.take_slot()
            self._sender.resend_soon(row, None)
        return bool(rows)

    async def _left_by_earlier_runs(self) -> None:
        """Batches in flight are polled again (they hold their room in the queue at once); retry chunks
        whose create may not have happened are sent again (input chunks are, when the producer cuts them
        again)."""
        ledger = self._ledger
        if self._settings.max_cost_usd is not None:
            # what a previous run sent (or may have) counts against the cap until it is collected; a run
            # without a cap recorded no estimate, so it is made now from the chunk's requests
            for row in await ledger.chunks_in(ChunkState.SUBMITTED, ChunkState.SUBMITTING, ChunkState.PLANNED):
                est = row.est_cost or self._admission.budget.estimate(
                    [r for _, r, _ in await self._replay.requests(row)])
                self._admission.sent(row.id, est)
        for row in await ledger.chunks_in(ChunkState.SUBMITTED):
            await self._admission.take_slot()
            weight = await self._weight_of(row)
            flight = Flight(1, self._queues.restore(weight.key, weight.units), weight)
            self._sender.track(flight, row, row.batch_id or "", None, now=True)
        for row in await ledger.chunks_in(ChunkState.SUBMITTING, ChunkState.PLANNED):
            if not self._replay.from_input(row):
                await self._admission.take_slot()
                self._sender.resend_soon(row, None)

    async def _weight_of(self, row: ChunkRow) -> Weight:
        """What a chunk an earlier run sent weighs in the queue (as it recorded; weighed again if it did not)."""
        if row.units is not None and row.queue_key:
            return Weight(row.queue_key, row.units, row.units, row.take)
        if self._queues.measure.unit == "requests":
            return Weight("requests", row.take, row.take, row.take)
        return self._queues.weigh([r for _, r, _ in await self._replay.requests(row)])

    async def _count_lines(self, blocks: AsyncGenerator[Block, None]) -> AsyncGenerator[Block, None]:
        async with aclosing(blocks):
            async for b in blocks:
                while self._endings.collecting and not self._could_send_now():
                    # Ended batches first while the next batch would wait anyway: results made durable
                    # before more input is read, so a batch's delay to disk is its own download, not a queue
                    # behind new work. With room in the provider's queue and a slot free, refilling comes first:
                    # looked at again each time a batch ends or is collected, not once all collecting is done.
                    self._endings.moved.clear()
                    await self._endings.moved.wait()
                if not self._stats.lines_read and b.lines:
                    self._expect_lines(b)
                self._stats.lines_read += len(b.lines)
                yield b

    def _could_send_now(self) -> bool:
        return self._admission.in_flight < self._settings.concurrency and self._queues.has_room()

    def _expect_lines(self, first: Block) -> None:
        """From the first block's line length and the inputs' sizes, about how many lines are coming."""
        sources = self._job.sources
        raw = [len(x) + 1 for x in first.lines if type(x) is bytes]
        plain = [src.path for src in sources if src.unit == "bytes" and not src.path.endswith(".gz")
                 and os.path.isfile(src.path)]  # not a bucket's object
        if raw and plain and len(plain) == len(sources):
            total = sum(os.path.getsize(p) for p in plain)
            self._stats.expected_lines = int(total / (sum(raw) / len(raw)))
            self._validator.expect(self._stats.expected_lines)

    async def _input_chunk(self, chunk: Chunk) -> None:
        """A chunk of the input as cut: sent if it is new, its unsent parts sent again if an earlier run
        recorded it, counted as held back while nothing new may go."""
        rows = await self._ledger.chunks_of_root(chunk.seq)
        span = (chunk.start_file, chunk.start_pos, chunk.start_line, chunk.end_file, chunk.end_pos)
        if self._admission.hold:
            if not rows or any(r.state in (ChunkState.SUBMITTING, ChunkState.PLANNED) for r in rows):
                self._admission.held_back += chunk.n
            return
        if rows:
            await self._input_known(chunk, rows, span)
        else:
            await self._input_new(chunk, span)

    async def _input_new(self, chunk: Chunk, span: tuple[int, int, int, int, int]) -> None:
        """A chunk no run has recorded: admitted (or cut into parts when too heavy for the queue), its intent
        recorded, then handed to the sender."""
        ledger, admission = self._ledger, self._admission
        if (key := self.primer.wants(chunk.lines[0])) is not None:
            await self._input_parts(chunk, span, self._priming_ranges(chunk), prime=key)
            return
        weight = self._queues.weigh(chunk.lines)
        limit = self._queues.part_limit(weight.key)
        if weight.units > limit and chunk.n > 1:
            await self._input_parts(chunk, span, bounds(chunk.n, parts_needed(weight.units, limit)))
            return
        try:
            ticket = await admission.admit(chunk.lines, weight, splittable=True)
        except TooHeavy:  # the queue turned out smaller while it waited
            await self._input_parts(chunk, span, bounds(chunk.n, parts_needed(weight.units,
                                                                             self._queues.part_limit(weight.key))))
            return
        if ticket is None:
            admission.held_back += chunk.n
            return
        digest = _digest(chunk)
        chunk_id = await ledger.record_intent(kind=ChunkKind.INPUT, root_seq=chunk.seq, take=chunk.n,
                                              nbytes=chunk.nbytes, span=span, est_cost=ticket.estimate_usd,
                                              skipped=chunk.skipped, digest=digest, ids=chunk.ids,
                                              units=weight.units, queue_key=weight.key)
        admission.sent(chunk_id, ticket.estimate_usd)
        out = Outgoing(chunk_id, ChunkKind.INPUT, chunk.seq, 0, chunk.lines, chunk.ids, 1, time.time())
        await self._sender.send_new(out, ticket)

    async def _input_known(self, chunk: Chunk, rows: list[ChunkRow], span: tuple[int, int, int, int, int]) -> None:
        """A chunk an earlier run recorded: checked against the ledger (the same span and digest), and its
        rows whose create may not have happened sent again (the requests the API refused left out)."""
        first = rows[0]
        if (first.start_file, first.start_pos, first.start_line, first.end_file, first.end_pos) != span \
                and first.skip == 0:
            raise errors.JobMismatch(f"chunk {chunk.seq} of the input no longer matches the ledger; the input "
                                     f"or the options changed. Start fresh with another --out")
        known = next((r.digest for r in rows if r.digest), None)
        if known is not None and _digest(chunk, known) != known:
            raise errors.JobMismatch(changed_message(self._job.sources[chunk.start_file].path, chunk.start_line))
        refused = await self._ledger.api_rejected(chunk.seq)
        if (key := self.primer.wants(chunk.lines[0])) is not None:
            await self._prime_again(chunk, rows, key, refused)
            rows = await self._ledger.chunks_of_root(chunk.seq)  # the priming request's row is done now
        for row in rows:
            if row.id in self._book.live or row.state not in (ChunkState.SUBMITTING, ChunkState.PLANNED):
                continue
            parts = [(chunk.lines[i], chunk.ids[i], i) for i in range(row.skip, min(row.skip + row.take, chunk.n))
                     if chunk.ids[i] not in refused]
            await self._admission.take_slot()
            self._sender.resend_soon(row, parts)

    def _priming_ranges(self, chunk: Chunk) -> list[tuple[int, int]]:
        """The priming request alone, then the rest (in as many parts as the provider's queue needs)."""
        if chunk.n == 1:
            return [(0, 1)]
        weight = self._queues.weigh(chunk.lines[1:])
        limit = self._queues.part_limit(weight.key)
        n_rest = parts_needed(weight.units, limit) if weight.units > limit and chunk.n > 2 else 1
        return [(0, 1)] + [(1 + a, 1 + b) for a, b in bounds(chunk.n - 1, n_rest)]

    async def _prime_again(self, chunk: Chunk, rows: list[ChunkRow], key: str, refused: dict[str, str]) -> None:
        """A chunk an earlier run split for priming, killed before the prefix was noted primed: its priming
        request goes again (or its batch is awaited) before the rest."""
        first = next((r for r in rows if r.skip == 0 and r.take == 1 and r.state != ChunkState.SPLIT), None)
        if first is None or len(rows) < 2:
            return  # not split for priming (an earlier version's job): sent as it was cut
        self.primer.expect(first.id)
        if first.state in (ChunkState.COLLECTED, ChunkState.DROPPED):
            self.primer.ended(first.id)
        elif first.state in (ChunkState.SUBMITTING, ChunkState.PLANNED) and first.id not in self._book.live:
            await self._admission.take_slot()
            parts = [(chunk.lines[0], chunk.ids[0], 0)] if chunk.ids[0] not in refused else []
            self._sender.resend_soon(first, parts)
        await self.primer.wait(first.id, key, lambda: bool(self._admission.hold))

    async def _input_parts(self, chunk: Chunk, span: tuple[int, int, int, int, int], ranges: list[tuple[int, int]],
                           *, prime: str | None = None) -> None:
        """A new chunk sent as parts, each its own batch: too heavy for one batch, or (`prime`) its first
        request primes the prompt cache of its prefix and the rest waits for it."""
        ledger, admission, overhead = self._ledger, self._admission, self._provider.body_overhead
        parent = await ledger.record_intent(kind=ChunkKind.INPUT, root_seq=chunk.seq, take=chunk.n,
                                            nbytes=chunk.nbytes, span=span, skipped=chunk.skipped,
                                            digest=_digest(chunk), ids=chunk.ids)
        sizes = [BODY_WRAPPER_BYTES + sum(len(x) + overhead(len(x)) for x in chunk.lines[a:b]) for a, b in ranges]
        specs = split_specs(ranges, list(range(chunk.n)), chunk.ids, sizes, skip=0, take=chunk.n, from_input=True)
        child_ids = await ledger.record_split(parent, specs)
        self._book.live.update(child_ids)
        if prime is None:
            log.info("chunk %s: %s requests sent as %s batches, to fit the provider's queue", parent,
                     f"{chunk.n:,}", len(child_ids))
        for i, (child_id, (a, b), (_, _, nbytes, _)) in enumerate(zip(child_ids, ranges, specs, strict=True)):
            lines = chunk.lines[a:b]
            weight = self._queues.weigh(lines)
            ticket = await admission.admit(lines, weight)
            if ticket is None:
                admission.held_back += chunk.n - a
                self._book.live.difference_update(child_ids[i:])
                return
            await ledger.record_intent(kind=ChunkKind.INPUT, take=b - a, nbytes=nbytes, chunk_id=child_id,
                                       est_cost=ticket.estimate_usd, units=weight.units, queue_key=weight.key)
            admission.sent(child_id, ticket.estimate_usd)
            out = Outgoing(child_id, ChunkKind.INPUT, chunk.seq, a, lines, chunk.ids[a:b], 1, time.time())
            if prime is not None and i == 0:
                self.primer.expect(child_id)
            await self._sender.send_new(out, ticket)
            if prime is not None and i == 0:
                await self.primer.wait(child_id, prime, lambda: bool(admission.hold))

    async def _retry_chunk(self, *, full_only: bool = False) -> bool:
        """Send one batch of the parked requests whose wait is over; whether one was sent (or should be
        tried again at once).

        full_only: only a full batch (while input is still being read, small ones wait for the end)."""
        s = self._settings
        pending = one_lane(await self._ledger.pending_retries(s.batch_size), job_lane_of(self._provider))
        if not pending:
            self.pending_retries = await self._ledger.count_retries(RetryState.PENDING)
            return False
        lines: list[bytes] = []
        ids: list[str] = []
        nbytes = BODY_WRAPPER_BYTES
        attempt = 1
        full = len(pending) == s.batch_size
        for cid, request, attempts in pending:
            size = len(request) + self._provider.body_overhead(len(request))
            if lines and nbytes + size > s.batch_bytes:
                full = True
                break
            lines.append(request)
            ids.append(cid)
            nbytes += size
            attempt = max(attempt, attempts + 1)
        if full_only and not full:
            return False
        weight = self._queues.weigh(lines)
        limit = self._queues.part_limit(weight.key)
        if weight.units > limit and len(lines) > 1:  # fewer requests, so that the batch fits the queue
            keep = max(1, len(lines) * limit // weight.units)
            lines, ids = lines[:keep], ids[:keep]
            nbytes = BODY_WRAPPER_BYTES + sum(len(x) + self._provider.body_overhead(len(x)) for x in lines)
            weight = self._queues.weigh(lines)
        try:
            ticket = await self._admission.admit(lines, weight, splittable=True)
        except TooHeavy:
            return True  # the queue turned out smaller while it waited: the next call takes fewer
        if ticket is None:
            return False
        chunk_id = await self._ledger.record_intent(kind=ChunkKind.RETRY, take=len(lines), nbytes=nbytes,
                                                   attempt=attempt, retry_ids=ids, est_cost=ticket.estimate_usd,
                                                   units=weight.units, queue_key=weight.key)
        self._admission.sent(chunk_id, ticket.estimate_usd)
        self.pending_retries = max(0, self.pending_retries - len(lines))
        await self._sender.send_new(Outgoing(chunk_id, ChunkKind.RETRY, None, 0, lines, ids, attempt, time.time()),
                                 ticket)
        return True
