"""One run of a job: input to shards inside one task group, resumable at any instant.

    reader -> batcher -> [admission] -> submitter -> poller -> collector -> shards + ledger
                          (a slot)      (create)     (one loop) (one batch at a time)

A slot is taken before a chunk is sent and given back once its results are durable (see
`admission`), so memory is bounded by K x batch size. The producer reads the input once per run; a
resumed run reads it again from the start (the cut is deterministic) and skips every chunk the ledger
already knows. What a previous run left is picked up first: its batches in flight are polled again,
and its chunks whose create may not have happened are sent again (after looking for the batch).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncIterator
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any

import orjson

from batch_scheduler.core import errors
from batch_scheduler.core.ledger import ChunkKind, ChunkRow, ChunkState, RetryState
from batch_scheduler.job.admission import Admission
from batch_scheduler.job.batcher import BODY_WRAPPER_BYTES, Chunk, cut_chunks
from batch_scheduler.job.collector import Collector, NotOurs
from batch_scheduler.job.job import Job
from batch_scheduler.job.poller import Poller
from batch_scheduler.job.reader import Block, span_blocks
from batch_scheduler.job.replay import Part, Replay
from batch_scheduler.job.submitter import Outgoing, Submitter
from batch_scheduler.job.validate import Validator
from batch_scheduler.providers.base import BatchInfo, BatchState, Provider

log = logging.getLogger("batch_scheduler.engine")  # one log for the engine's pieces

UPLOADS = 2  # create calls (batch bodies being built and sent) at once; more slots wait at the provider


@dataclass
class Flight:
    """One slot's worth of work: a chunk, which may become several batches after a split."""

    remaining: int = 0


@dataclass
class Tracked:
    flight: Flight
    row: ChunkRow


class Run:
    def __init__(self, job: Job, provider: Provider, replay: Replay, submitter: Submitter, collector: Collector,
                 admission: Admission, tg: asyncio.TaskGroup, *, pending_retries: int):
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
        self.validator = Validator(provider, s.batch_bytes - BODY_WRAPPER_BYTES)
        self.poller = Poller(provider, self._on_ended, poll_min_s=s.poll_min_s, poll_max_s=s.poll_max_s)
        self._pending_retries = pending_retries
        self._live_rows: set[int] = set()  # chunks this run is sending or tracking
        self._uploads = asyncio.Semaphore(UPLOADS)
        self._collecting = 0  # ended batches being collected
        self._collect_idle = asyncio.Event()
        self._collect_idle.set()

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
        async with aclosing(cut_chunks(counting, self.validator, job.rejects, batch_size=s.batch_size,
                                       batch_bytes=s.batch_bytes, overhead=self.provider.body_overhead,
                                       unit_of=lambda fi: job.sources[fi].unit)) as chunks:
            async for chunk in chunks:
                self.stats.accepted += chunk.n
                self.stats.rejected = job.rejects.count
                await self._input_chunk(chunk)
                while self._pending_retries >= s.batch_size and not admission.hold:
                    await self._retry_chunk()
        self.stats.reading_done = True
        self.stats.rejected = job.rejects.count
        job.rejects.flush()
        await ledger.record_accepted_total(self.stats.accepted)
        while True:
            admission.check()
            if self._pending_retries > 0 and not admission.hold:
                await self._retry_chunk()
                continue
            if admission.in_flight == 0:
                return
            admission.changed.clear()
            await admission.changed.wait()

    async def _left_by_earlier_runs(self) -> None:
        """Batches in flight are polled again; retry chunks whose create may not have happened are sent
        again (input chunks are, when the producer cuts them again)."""
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
            self._track(Flight(1), row, row.batch_id or "", None, now=True)
        for row in await ledger.chunks_in(ChunkState.SUBMITTING, ChunkState.PLANNED):
            if not self.replay.from_input(row):
                await self.admission.take_slot()
                self._spawn_resend(row, None)

    async def _count_lines(self, blocks: AsyncIterator[Block]) -> AsyncIterator[Block]:
        async with aclosing(blocks):
            async for b in blocks:
                if self._collecting:
                    # Ended batches first: results made durable before more input is read and sent, so
                    # a batch's delay to disk is its own download, not a queue behind new work.
                    await self._collect_idle.wait()
                if not self.stats.lines_read and b.lines:
                    self._expect_lines(b)
                self.stats.lines_read += len(b.lines)
                yield b

    def _expect_lines(self, first: Block) -> None:
        """From the first block's line length and the inputs' sizes, about how many lines are coming."""
        sources = self.job.sources
        raw = [len(x) + 1 for x in first.lines if type(x) is bytes]
        plain = [src.path for src in sources if src.unit == "bytes" and not src.path.endswith(".gz")
                 and os.path.isfile(src.path)]  # not a bucket's object
        if raw and plain and len(plain) == len(sources):
            total = sum(os.path.getsize(p) for p in plain)
            self.validator.expect(int(total / (sum(raw) / len(raw))))

    async def _input_chunk(self, chunk: Chunk) -> None:
        ledger, admission = self.ledger, self.admission
        rows = await ledger.chunks_of_root(chunk.seq)
        span = (chunk.start_file, chunk.start_pos, chunk.start_line, chunk.end_file, chunk.end_pos)
        if admission.hold:
            if not rows or any(r.state in (ChunkState.SUBMITTING, ChunkState.PLANNED) for r in rows):
                admission.held_back += chunk.n
            return
        if not rows:
            est = await admission.admit(chunk.lines)
            if est is None:
                admission.held_back += chunk.n
                return
            chunk_id = await ledger.record_intent(kind=ChunkKind.INPUT, root_seq=chunk.seq, take=chunk.n,
                                                  nbytes=chunk.nbytes, span=span, est_cost=est, skipped=chunk.skipped)
            admission.sent(chunk_id, est)
            out = Outgoing(chunk_id, ChunkKind.INPUT, chunk.seq, 0, chunk.lines, chunk.ids, 1, time.time())
            await self._spawn_submit(out, None)
            return
        first = rows[0]
        if (first.start_file, first.start_pos, first.start_line, first.end_file, first.end_pos) != span \
                and first.skip == 0:
            raise errors.JobMismatch(f"chunk {chunk.seq} of the input no longer matches the ledger; the input "
                                     f"or the options changed. Start fresh with another --out")
        refused = await ledger.api_rejected(chunk.seq)
        for row in rows:
            if row.id in self._live_rows or row.state not in (ChunkState.SUBMITTING, ChunkState.PLANNED):
                continue
            parts = [(chunk.lines[i], chunk.ids[i], i) for i in range(row.skip, min(row.skip + row.take, chunk.n))
                     if chunk.ids[i] not in refused]
            await admission.take_slot()
            self._spawn_resend(row, parts)

    async def _retry_chunk(self) -> None:
        """Send one batch of requests parked for another attempt."""
        s = self.settings
        pending = await self.ledger.pending_retries(s.batch_size)
        if not pending:
            self._pending_retries = 0
            return
        lines, ids, nbytes = [], [], BODY_WRAPPER_BYTES
        attempt = 1
        for cid, request, attempts in pending:
            size = len(request) + self.provider.body_overhead(len(request))
            if lines and nbytes + size > s.batch_bytes:
                break
            lines.append(request)
            ids.append(cid)
            nbytes += size
            attempt = max(attempt, attempts + 1)
        est = await self.admission.admit(lines)
        if est is None:
            return
        chunk_id = await self.ledger.record_intent(kind=ChunkKind.RETRY, take=len(lines), nbytes=nbytes,
                                                   attempt=attempt, retry_ids=ids, est_cost=est)
        self.admission.sent(chunk_id, est)
        self._pending_retries = max(0, self._pending_retries - len(lines))
        await self._spawn_submit(Outgoing(chunk_id, ChunkKind.RETRY, None, 0, lines, ids, attempt, time.time()), None)

    # -- submitting -----------------------------------------------------------------------------

    async def _spawn_submit(self, out: Outgoing, flight: Flight | None) -> None:
        """Send a new chunk once an upload permit is free: the producer waits here, so at most UPLOADS
        batch bodies (and their lines) are in memory at once, not one per slot."""
        self._live_rows.add(out.chunk_id)
        await self._uploads.acquire()
        self._tg.create_task(self._submit(out, flight, permit=True))

    def _spawn_resend(self, row: ChunkRow, parts: list[Part] | None) -> None:
        self._live_rows.add(row.id)
        self._tg.create_task(self._resend(row, parts))

    async def _resend(self, row: ChunkRow, parts: list[Part] | None, flight: Flight | None = None) -> None:
        """A chunk whose create may or may not have happened (SUBMITTING) or surely did not (PLANNED).

        parts: what to send (see `Replay.parts`); None to read them again.
        """
        try:
            if parts is None:
                parts = await self.replay.parts(row)
            if row.state == ChunkState.SUBMITTING and parts:
                info = await self.submitter.adopt(row.id, len(parts), row.intent_at)
                if info is not None:
                    self._track(flight or Flight(1), await self.ledger.chunk(row.id), info.id, info.created_at)
                    return
            if not parts:
                await self.ledger.set_state(row.id, ChunkState.DROPPED, "every request was refused")
                self.admission.give_slot()
                return
            lines = [p[0] for p in parts]
            await self.ledger.record_intent(kind=row.kind, take=row.take, nbytes=self.submitter.nbytes(lines),
                                            chunk_id=row.id, est_cost=row.est_cost)
            out = Outgoing(row.id, row.kind, row.root_seq, row.skip, lines, [p[1] for p in parts], row.attempt,
                           time.time(), [p[2] for p in parts], row.take)
        except BaseException as exc:
            self.admission.fail(exc)
            raise
        await self._submit(out, flight)

    async def _submit(self, out: Outgoing, flight: Flight | None, *, permit: bool = False) -> None:
        try:
            try:
                done = await self.submitter.submit(out)
            finally:
                if permit:
                    self._uploads.release()
            if self.stats.first_submit_s is None:
                self.stats.first_submit_s = time.monotonic() - self.stats.started
            self.stats.submitted += sum(d.n for d in done)
            if not done:
                self.admission.give_slot()
                return
            fl = flight or Flight()
            fl.remaining += len(done) - (1 if flight else 0)
            for d in done:
                self._track(fl, await self.ledger.chunk(d.chunk_id), d.info.id, d.info.created_at)
        except BaseException as exc:
            self.admission.fail(exc)
            raise

    def _track(self, flight: Flight, row: ChunkRow, batch_id: str, created_at: float | None, *,
               now: bool = False) -> None:
        self._live_rows.add(row.id)
        self.poller.track(batch_id, Tracked(flight, row), created_at, now=now)

    # -- collecting -----------------------------------------------------------------------------

    async def _on_ended(self, payload: Any, info: BatchInfo) -> None:
        self._collecting += 1
        self._collect_idle.clear()
        task = self._tg.create_task(self._collect(payload, info))
        task.add_done_callback(self._collected)

    def _collected(self, _task: asyncio.Task) -> None:
        self._collecting -= 1
        if not self._collecting:
            self._collect_idle.set()

    async def _collect(self, payload: Tracked, info: BatchInfo) -> None:
        row, flight = payload.row, payload.flight
        try:
            await self.ledger.mark_ended(row.id, info.ended_at)
            if info.state is BatchState.FAILED:
                await self._batch_failed(row, info)
            else:
                try:
                    got = await self.collector.collect(row, info)
                except NotOurs as exc:
                    await self._not_ours(row, info, flight, exc)
                    return
                self.stats.finished += got.finals
                self.admission.settled(row.id, got.counts.get("cost_usd", 0.0))
                if got.parked:
                    self._pending_retries = await self.ledger.count_retries(RetryState.PENDING)
            self._live_rows.discard(row.id)
            flight.remaining -= 1
            if flight.remaining <= 0:
                self.admission.give_slot()
        except BaseException as exc:
            self.admission.fail(exc)
            raise

    async def _not_ours(self, row: ChunkRow, info: BatchInfo, flight: Flight, exc: NotOurs) -> None:
        log.warning("adopted batch %s is not ours (it answers %s); sending chunk %s again", info.id, exc, row.id)
        await self.ledger.disown(row.id, f"batch {info.id} was not ours")
        self._live_rows.discard(row.id)
        fresh = await self.ledger.chunk(row.id)
        parts = await self.replay.parts(fresh)
        self._live_rows.add(row.id)
        await self._resend(fresh, parts, flight)

    async def _batch_failed(self, row: ChunkRow, info: BatchInfo) -> None:
        """The provider failed a batch as a whole (OpenAI: enqueued token limit, a bad file): each of its
        requests has used an attempt and waits for the next, as a transient error would; out of attempts, it
        is parked FAILED and the job ends unfinished (a later run gives it one more attempt)."""
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
