"""The engine: one job from input files to sharded results, resumable at any instant.

    reader -> batcher -> [slot] -> submitter -> poller -> collector -> shards + ledger
                                   (create)     (one loop) (one batch at a time)

A slot (semaphore of --concurrency) is taken before a chunk is sent and given back once its results
are durable, so at most K batches are in flight and memory is bounded by K x batch size. The
producer reads the input once per run; a resumed run reads it again from the start (the cut is
deterministic) and skips every chunk the ledger already knows.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any

import orjson

from batch_scheduler.core import errors
from batch_scheduler.core.errors import ExitCode
from batch_scheduler.core.http import HttpClient
from batch_scheduler.core.ledger import ChunkRow, ChunkState, Ledger
from batch_scheduler.core.settings import Settings
from batch_scheduler.job.batcher import BODY_WRAPPER_BYTES, Chunk, cut_chunks
from batch_scheduler.job.budget import Budget, unpriced_message, unpriced_models
from batch_scheduler.job.collector import Collector, NotOurs
from batch_scheduler.job.estimate import against_usage, measure, survey
from batch_scheduler.job.poller import Poller
from batch_scheduler.job.pricing import PriceTable
from batch_scheduler.job.progress import JobStats, show_progress
from batch_scheduler.job.reader import Block, JsonlSource, fingerprint
from batch_scheduler.job.submitter import Outgoing, Submitter
from batch_scheduler.job.validate import Rejects, Validator
from batch_scheduler.job.writer import ShardSet
from batch_scheduler.providers import make_provider
from batch_scheduler.providers.base import BatchInfo, BatchState, Provider

log = logging.getLogger("batch_scheduler.engine")

UPLOADS = 2  # create calls (batch bodies being built and sent) at once; more slots wait at the provider


@dataclass
class JobResult:
    exit_code: int
    message: str
    summary: dict[str, Any] = field(default_factory=dict)
    retry: bool = False  # unfinished for a reason that may pass: running it again later may finish it


@dataclass
class Flight:
    """One slot's worth of work: a chunk, which may become several batches after a split."""

    remaining: int = 0


@dataclass
class Tracked:
    flight: Flight
    row: ChunkRow


def make_sources(paths: list[str], settings: Settings) -> list:
    if settings.template:
        from batch_scheduler.job.sources import (
            template_sources,  # rows + template (issue: inputs people have)
        )
        return template_sources(paths, settings)
    return [JsonlSource(p, i, max_line_bytes=settings.batch_bytes) for i, p in enumerate(paths)]


async def span_blocks(sources: list, start: tuple[int, int, int], end: tuple[int, int] | None
                      ) -> AsyncIterator[Block]:
    """Blocks from (file, pos, line) up to (file, pos) exclusive; to the end of input if end is None."""
    sf, sp, sl = start
    for fi in range(sf, len(sources)):
        src = sources[fi]
        async with aclosing(src.blocks(sp if fi == sf else 0, sl if fi == sf else 1)) as blocks:
            async for block in blocks:
                if end is not None and fi == end[0]:
                    if block.start_pos >= end[1]:
                        break
                    yield _clip(block, end[1], src.unit)
                else:
                    yield block
        if end is not None and fi >= end[0]:
            return


def _clip(block: Block, end_pos: int, unit: str) -> Block:
    pos, keep = block.start_pos, 0
    for raw in block.lines:
        if pos >= end_pos:
            break
        keep += 1
        pos += 1 if unit == "rows" else len(raw) + 1
    return block if keep == len(block.lines) else Block(block.file_index, block.lines[:keep],
                                                        block.first_line, block.start_pos)


class Engine:
    def __init__(self, settings: Settings, out_dir: str, inputs: list[str], *,
                 provider_factory: Callable[[Settings, HttpClient], Provider] | None = None,
                 progress_tty: bool = False, quiet: bool = False, remembered: dict | None = None,
                 slots: Any = None):
        self.settings = settings
        self.out_dir = out_dir
        self.inputs = inputs
        self._provider_factory = provider_factory or make_provider
        self._tty = progress_tty
        self._quiet = quiet
        self._remembered = remembered or {}
        self._shared_slots = slots  # an object with async acquire() and release(), shared by jobs (daemon)
        self.stats = JobStats()
        self.prices = PriceTable.load(settings.prices_file)
        self.ledger: Ledger | None = None
        self._live_rows: set[int] = set()
        self._pending_retries = 0
        self._changed = asyncio.Event()
        self._uploads = asyncio.Semaphore(UPLOADS)
        self._collecting = 0  # ended batches being collected
        self._collect_idle = asyncio.Event()
        self._collect_idle.set()
        self._in_flight = 0
        self._fatal: BaseException | None = None
        self.cancelled = False
        self.hold: str | None = None  # why no new batch is sent (cancelled, --max-cost)
        self._held_back = 0  # requests not sent because of the hold
        self.budget = Budget(settings.max_cost_usd, self.prices)
        self._spent_usd = 0.0
        self.http: HttpClient | None = None
        self.poller: Poller | None = None

    # -- identity -------------------------------------------------------------------------------

    def _open_ledger(self) -> Ledger:
        os.makedirs(self.out_dir, mode=0o700, exist_ok=True)
        prints = [fingerprint(p) for p in self.inputs]  # before the ledger opens: an unreadable input leaks nothing
        ledger = Ledger(os.path.join(self.out_dir, "ledger.db"))
        meta = ledger.read_meta()
        shaping = self.settings.shaping()
        if not meta:
            ledger.write_meta({"inputs": prints, "shaping": shaping, "created_at": time.time(), "version": 1,
                               "flags": self._remembered})
            return ledger
        how = f"to start fresh, use another --out or delete {self.out_dir}"
        if [p["path"] for p in meta["inputs"]] != [p["path"] for p in prints]:
            ledger.close()
            raise errors.JobMismatch(f"{self.out_dir} holds a job over other input files "
                                     f"({', '.join(p['path'] for p in meta['inputs'])}); {how}")
        for old, new in zip(meta["inputs"], prints, strict=True):
            if old != new:
                ledger.close()
                raise errors.JobMismatch(f"input {new['path']} changed since the job started "
                                         f"(size or content differs); {how}")
        changed = [k for k in shaping if meta["shaping"].get(k) != shaping[k]]
        if changed:
            ledger.close()
            detail = ", ".join(f"{k}: was {meta['shaping'].get(k)!r}, now {shaping[k]!r}" for k in changed)
            raise errors.JobMismatch(f"{self.out_dir} was started with other batch options ({detail}); "
                                     f"run again with the same options, or {how}")
        return ledger

    def _open_shards(self, offsets: list[int]) -> ShardSet:
        shards = ShardSet(self.out_dir, self.settings.shards)
        for i, (have, want) in enumerate(zip(shards.offsets, offsets, strict=True)):
            if have < want:
                shards.close()
                raise errors.JobMismatch(f"shard {i} is shorter ({have} bytes) than the ledger records "
                                         f"({want}); results were removed by hand, start fresh")
        shards.rollback(offsets)  # drop lines of downloads that were interrupted
        return shards

    # -- the run --------------------------------------------------------------------------------

    async def run(self) -> JobResult:
        started = time.time()
        try:
            self.ledger = ledger = self._open_ledger()
        except errors.JobMismatch as err:  # another job's directory: write nothing into it
            return JobResult(ExitCode.USAGE, str(err))
        shards: ShardSet | None = None
        rejects = Rejects(os.path.join(self.out_dir, "rejected.jsonl"), self.inputs)
        try:
            for cid, msg in (await ledger.api_rejected()).items():
                rejects.add(None, None, cid, f"refused by the API: {msg}")
            shards = self._open_shards(await ledger.shard_offsets(self.settings.shards))
            self.cancelled = bool(ledger.read_meta().get("cancelled")) and not self.settings.retry_cancelled
            if self.cancelled:
                self.hold = "the job was cancelled"
            if self.settings.retry_cancelled:
                ledger.write_meta({"cancelled": False})
                n = await ledger.requeue("canceled")
                if n:
                    log.info("%s cancelled request(s) queued again (--retry-cancelled)", n)
            n = await ledger.requeue("failed")
            if n:
                log.info("%s request(s) of batches the provider failed get one more attempt", n)
            counters = await ledger.acounters()
            self._spent_usd = counters.get("cost_usd", 0.0)
            self.stats.finished_before = int(sum(counters.get(k, 0) for k in
                                                 ("succeeded", "errored", "expired")))
            self._pending_retries = await ledger.count_retries("pending")
            result = await self._run_pipeline(ledger, shards, rejects)
        except errors.JobMismatch as err:
            result = JobResult(ExitCode.USAGE, str(err))
        except asyncio.CancelledError:
            # stopped from outside (daemon shutdown): everything durable is in the ledger already
            self._close(rejects, shards)
            self.write_summary(JobResult(ExitCode.FAILED, "stopped; resumes where it was"), started, rejects)
            ledger.close()
            raise
        except BaseException:  # an error not turned into a result (e.g. an unreadable input): close what we opened
            self._close(rejects, shards)
            ledger.close()
            raise
        self._close(rejects, shards)
        result.summary = self.write_summary(result, started, rejects)
        ledger.close()
        return result

    @staticmethod
    def _close(rejects: Rejects, shards: ShardSet | None) -> None:
        rejects.close()
        if shards is not None:
            shards.close()

    async def _run_pipeline(self, ledger: Ledger, shards: ShardSet, rejects: Rejects) -> JobResult:
        s = self.settings
        self.sources = make_sources(self.inputs, s)
        headers = make_provider_headers(s)
        async with HttpClient(headers, s.retry, timeout_s=s.http_timeout_s, secret=s.api_key,
                              connections=max(16, s.concurrency * 2)) as http:
            self.http = http
            http.on_retry.append(self._count_retry)
            provider = self._provider_factory(s, http)
            self.provider = provider
            self.validator = Validator(provider, s.batch_bytes - BODY_WRAPPER_BYTES)
            self.submitter = Submitter(provider, ledger, rejects, overhead=provider.body_overhead)
            self.collector = Collector(provider, ledger, shards, s, self._lookup, self.prices.cost)
            self.poller = Poller(provider, self._on_ended, poll_min_s=s.poll_min_s, poll_max_s=s.poll_max_s)
            self.slots = self._shared_slots or asyncio.Semaphore(s.concurrency)
            self.rejects = rejects
            if s.strict and (refused := await self._strict_pass()):
                return refused
            if s.max_cost_usd is not None and (refused := await self._price_check()):
                return refused
            try:
                async with asyncio.TaskGroup() as tg:
                    self.tg = tg
                    progress = tg.create_task(show_progress(self.stats, tty=self._tty)) if not self._quiet else None
                    poll_task = tg.create_task(self.poller.run())
                    try:
                        await self._produce()
                    finally:
                        self.poller.stop()
                        if progress:
                            progress.cancel()
                    await poll_task
            except BaseExceptionGroup as eg:
                return self._failure(first_error(eg), http)
        return await self._final_result()

    def _failure(self, err: BaseException, http: HttpClient) -> JobResult:
        """The one clear line for a run that stopped on an error; everything durable stays in the ledger."""
        if isinstance(err, errors.AuthRefused):
            return JobResult(ExitCode.AUTH, auth_message(err, self.settings))
        if isinstance(err, errors.JobMismatch):
            return JobResult(ExitCode.USAGE, str(err))
        if isinstance(err, errors.SchedulerError):
            return JobResult(ExitCode.FAILED, f"stopped: {http.redact(str(err))}. Nothing is lost: run the same "
                             f"command again to resume", retry=True)
        raise err

    async def _strict_pass(self) -> JobResult | None:
        """--strict: read everything first; any bad line refuses the whole job before anything is sent."""
        s = self.settings
        validator = Validator(self.provider, s.batch_bytes - BODY_WRAPPER_BYTES)
        async for _ in cut_chunks(span_blocks(self.sources, (0, 0, 1), None), validator, self.rejects,
                                  batch_size=s.batch_size, batch_bytes=s.batch_bytes,
                                  overhead=self.provider.body_overhead, unit_of=lambda fi: self.sources[fi].unit):
            pass
        if not self.rejects.count:
            return None
        self.rejects.report()
        return JobResult(ExitCode.FAILED, f"--strict: {self.rejects.count:,} bad line(s), listed in "
                         f"{self.out_dir}/rejected.jsonl; nothing was submitted")

    async def _price_check(self) -> JobResult | None:
        """--max-cost fails closed: before the first create, every model of the accepted requests must have
        a price. One pass over the input (as --strict's) finds them, with the job's token estimate and a
        sample counted exactly (job.estimate); the ledger keeps both (meta `estimate`), so a resumed job
        reads nothing twice and checks the models again against the prices of this run."""
        assert self.ledger is not None
        s = self.settings
        found = self.ledger.read_meta().get("estimate")
        if found is None:
            validator = Validator(self.provider, s.batch_bytes - BODY_WRAPPER_BYTES)
            chunks = cut_chunks(span_blocks(self.sources, (0, 0, 1), None), validator, Rejects(None, self.inputs),
                                batch_size=s.batch_size, batch_bytes=s.batch_bytes,
                                overhead=self.provider.body_overhead, unit_of=lambda fi: self.sources[fi].unit)
            async with aclosing(chunks):
                job = await survey(chunks, self.provider.name, s.count_sample)
            found = job.record(await measure(s, job.sample, job.requests))
            self.ledger.write_meta({"estimate": found})
        self.budget.ratio = found["measured"]["ratio"]
        missing = unpriced_models(self.prices, found["models"])
        return JobResult(ExitCode.USAGE, unpriced_message(missing)) if missing else None

    async def _final_result(self) -> JobResult:
        assert self.ledger is not None
        if self.cancelled:
            return JobResult(ExitCode.FAILED, f"the job was cancelled; {self._held_back:,} request(s) were not "
                             f"sent. Run again with --retry-cancelled to carry on")
        if self.hold:
            return JobResult(ExitCode.FAILED, f"{self.hold} ({self._held_back:,} request(s) not sent)")
        canceled = await self.ledger.count_retries("canceled")
        pending = await self.ledger.count_retries("pending")
        failed = await self.ledger.count_retries("failed")
        if failed:
            return JobResult(ExitCode.FAILED, f"{failed:,} request(s) are in batches the provider failed as a whole "
                             f"{self.settings.max_attempts} times (`status` shows why); run the same command "
                             f"again to give them one more attempt", retry=True)
        if canceled:
            return JobResult(ExitCode.FAILED, f"{canceled:,} request(s) were cancelled; run again with "
                             f"--retry-cancelled to submit them")
        if pending:
            return JobResult(ExitCode.FAILED, f"{pending:,} request(s) still wait for another attempt; "
                             f"run the same command again", retry=True)
        return JobResult(ExitCode.OK, "done")

    def _count_retry(self, endpoint: str, attempt: int, err: BaseException, wait_s: float) -> None:
        self.stats.retries += 1
        log.debug("retry %s #%d in %.2fs: %s", endpoint, attempt, wait_s, err)

    # -- producer -------------------------------------------------------------------------------

    async def _produce(self) -> None:
        assert self.ledger is not None
        ledger, s = self.ledger, self.settings
        if s.max_cost_usd is not None:
            # what a previous run sent (or may have) counts against the cap until it is collected; a run
            # without a cap recorded no estimate, so it is made now from the chunk's requests
            for row in await ledger.chunks_in(ChunkState.SUBMITTED, ChunkState.SUBMITTING, ChunkState.PLANNED):
                est = row.est_cost or self.budget.estimate([r for _, r, _ in await self._requests_of(row)])
                self.budget.in_flight[row.id] = est
        for row in await ledger.chunks_in(ChunkState.SUBMITTED):
            await self._take_slot()
            self._track(Flight(1), row, row.batch_id or "", None, now=True)
        for row in await ledger.chunks_in(ChunkState.SUBMITTING, ChunkState.PLANNED):
            if row.kind == "retry":
                await self._take_slot()
                self._spawn_resend(row, None)
        counting = self._count_lines(span_blocks(self.sources, (0, 0, 1), None))
        async with aclosing(cut_chunks(counting, self.validator, self.rejects, batch_size=s.batch_size,
                                       batch_bytes=s.batch_bytes, overhead=self.provider.body_overhead,
                                       unit_of=lambda fi: self.sources[fi].unit)) as chunks:
            async for chunk in chunks:
                self.stats.accepted += chunk.n
                self.stats.rejected = self.rejects.count
                await self._input_chunk(chunk)
                while self._pending_retries >= s.batch_size and not self.hold:
                    await self._retry_chunk()
        self.stats.reading_done = True
        self.stats.rejected = self.rejects.count
        self.rejects.flush()
        ledger.write_meta({"accepted_total": self.stats.accepted})
        while True:
            if self._fatal:
                raise self._fatal
            if self._pending_retries > 0 and not self.hold:
                await self._retry_chunk()
                continue
            if self._in_flight == 0:
                return
            self._changed.clear()
            await self._changed.wait()

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
        raw = [len(x) + 1 for x in first.lines if type(x) is bytes]
        plain = [src.path for src in self.sources if src.unit == "bytes" and not src.path.endswith(".gz")]
        if raw and plain and len(plain) == len(self.sources):
            total = sum(os.path.getsize(p) for p in plain)
            self.validator.expect(int(total / (sum(raw) / len(raw))))

    async def _take_slot(self) -> None:
        await self.slots.acquire()
        self._in_flight += 1
        self.stats.in_flight = self._in_flight
        if self._fatal:
            raise self._fatal

    async def _admit(self, lines: list[bytes]) -> float | None:
        """Take a slot, then ask the budget; None (slot given back, job on hold) when over --max-cost."""
        await self._take_slot()
        if self.ledger is not None and self.ledger.read_meta().get("cancelled") and not self.cancelled:
            self.cancelled = True  # `cancel DIR` ran while we were going: send nothing new
            self.hold = "the job was cancelled"
        if self.hold:
            self._give_slot()
            return None
        est = self.budget.estimate(lines)
        if self.budget.allows(self._spent_usd, est):
            return est
        self._give_slot()
        self.hold = self.budget.stopped_at
        log.warning("%s", self.hold)
        return None

    def _give_slot(self) -> None:
        self._in_flight -= 1
        self.stats.in_flight = self._in_flight
        self.slots.release()
        self._changed.set()

    async def _input_chunk(self, chunk: Chunk) -> None:
        assert self.ledger is not None
        rows = await self.ledger.chunks_of_root(chunk.seq)
        span = (chunk.start_file, chunk.start_pos, chunk.start_line, chunk.end_file, chunk.end_pos)
        if self.hold:
            if not rows or any(r.state in (ChunkState.SUBMITTING, ChunkState.PLANNED) for r in rows):
                self._held_back += chunk.n
            return
        if not rows:
            est = await self._admit(chunk.lines)
            if est is None:
                self._held_back += chunk.n
                return
            chunk_id = await self.ledger.record_intent(kind="input", root_seq=chunk.seq, take=chunk.n,
                                                       nbytes=chunk.nbytes, span=span, est_cost=est,
                                                       skipped=chunk.skipped)
            self.budget.in_flight[chunk_id] = est
            out = Outgoing(chunk_id, "input", chunk.seq, 0, chunk.lines, chunk.ids, 1, time.time())
            await self._spawn_submit(out, None)
            return
        first = rows[0]
        if (first.start_file, first.start_pos, first.start_line, first.end_file, first.end_pos) != span \
                and first.skip == 0:
            raise errors.JobMismatch(f"chunk {chunk.seq} of the input no longer matches the ledger; the input "
                                     f"or the options changed. Start fresh with another --out")
        refused = await self.ledger.api_rejected(chunk.seq)
        for row in rows:
            if row.id in self._live_rows or row.state not in (ChunkState.SUBMITTING, ChunkState.PLANNED):
                continue
            parts = [(chunk.lines[i], chunk.ids[i], i) for i in range(row.skip, min(row.skip + row.take, chunk.n))
                     if chunk.ids[i] not in refused]
            await self._take_slot()
            self._spawn_resend(row, parts)

    async def _retry_chunk(self) -> None:
        """Send one batch of requests parked for another attempt."""
        assert self.ledger is not None
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
        est = await self._admit(lines)
        if est is None:
            return
        chunk_id = await self.ledger.record_intent(kind="retry", take=len(lines), nbytes=nbytes,
                                                   attempt=attempt, retry_ids=ids, est_cost=est)
        self.budget.in_flight[chunk_id] = est
        self._pending_retries = max(0, self._pending_retries - len(lines))
        await self._spawn_submit(Outgoing(chunk_id, "retry", None, 0, lines, ids, attempt, time.time()), None)

    # -- submitting -----------------------------------------------------------------------------

    async def _spawn_submit(self, out: Outgoing, flight: Flight | None) -> None:
        """Send a new chunk once an upload permit is free: the producer waits here, so at most UPLOADS
        batch bodies (and their lines) are in memory at once, not one per slot."""
        self._live_rows.add(out.chunk_id)
        await self._uploads.acquire()
        self.tg.create_task(self._submit(out, flight, permit=True))

    def _spawn_resend(self, row: ChunkRow, parts: list[tuple[bytes, str, int]] | None) -> None:
        self._live_rows.add(row.id)
        self.tg.create_task(self._resend(row, parts))

    async def _resend(self, row: ChunkRow, parts: list[tuple[bytes, str, int]] | None,
                      flight: Flight | None = None) -> None:
        """A chunk whose create may or may not have happened (SUBMITTING) or surely did not (PLANNED).

        parts: (line, custom_id, index in the root chunk) of an input chunk, refused lines left out.
        """
        assert self.ledger is not None
        try:
            if row.kind == "retry":
                reqs = await self.ledger.retry_requests(row.id)
                parts = [(r, c, i) for i, (c, r, _) in enumerate(reqs)]
            assert parts is not None
            if row.state == ChunkState.SUBMITTING and parts:
                info = await self.submitter.adopt(row.id, len(parts), row.intent_at)
                if info is not None:
                    self._track(flight or Flight(1), await self._row(row.id), info.id, info.created_at)
                    return
            if not parts:
                await self.ledger.set_state(row.id, ChunkState.DROPPED, "every request was refused")
                self._give_slot()
                return
            lines = [p[0] for p in parts]
            await self.ledger.record_intent(kind=row.kind, take=row.take, nbytes=self.submitter.nbytes(lines),
                                            chunk_id=row.id, est_cost=row.est_cost)
            out = Outgoing(row.id, row.kind, row.root_seq, row.skip, lines, [p[1] for p in parts], row.attempt,
                           time.time(), [p[2] for p in parts], row.take)
        except BaseException as exc:
            self._fail(exc)
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
                self._give_slot()
                return
            fl = flight or Flight()
            fl.remaining += len(done) - (1 if flight else 0)
            for d in done:
                self._track(fl, await self._row(d.chunk_id), d.info.id, d.info.created_at)
        except BaseException as exc:
            self._fail(exc)
            raise

    async def _row(self, chunk_id: int) -> ChunkRow:
        assert self.ledger is not None
        rows = await self.ledger._run(lambda db: db.execute(
            "SELECT " + ", ".join(ChunkRow.__dataclass_fields__) + " FROM chunks WHERE id=?", (chunk_id,)).fetchall())
        return ChunkRow(*rows[0])

    def _track(self, flight: Flight, row: ChunkRow, batch_id: str, created_at: float | None, *,
               now: bool = False) -> None:
        assert self.poller is not None
        self._live_rows.add(row.id)
        self.poller.track(batch_id, Tracked(flight, row), created_at, now=now)

    def _fail(self, exc: BaseException) -> None:
        if self._fatal is None and not isinstance(exc, asyncio.CancelledError):
            self._fatal = exc
        self._changed.set()

    # -- collecting -----------------------------------------------------------------------------

    async def _on_ended(self, payload: Any, info: BatchInfo) -> None:
        self._collecting += 1
        self._collect_idle.clear()
        task = self.tg.create_task(self._collect(payload, info))
        task.add_done_callback(self._collected)

    def _collected(self, _task: asyncio.Task) -> None:
        self._collecting -= 1
        if not self._collecting:
            self._collect_idle.set()

    async def _collect(self, payload: Tracked, info: BatchInfo) -> None:
        assert self.ledger is not None
        row, flight = payload.row, payload.flight
        try:
            await self.ledger.mark_ended(row.id, info.ended_at)
            if info.state is BatchState.FAILED:
                await self._batch_failed(row, info)
            else:
                try:
                    got = await self.collector.collect(row, info)
                except NotOurs as exc:
                    log.warning("adopted batch %s is not ours (it answers %s); sending chunk %s again",
                                info.id, exc, row.id)
                    await self.ledger.disown(row.id, f"batch {info.id} was not ours")
                    self._live_rows.discard(row.id)
                    fresh = await self._row(row.id)
                    parts = None
                    if fresh.kind == "input":
                        parts = await self._input_parts(fresh)
                    self._live_rows.add(row.id)
                    await self._resend(fresh, parts, flight)
                    return
                self.stats.finished += got.finals
                self._spent_usd += got.counts.get("cost_usd", 0.0)
                self.budget.in_flight.pop(row.id, None)
                if got.parked:
                    self._pending_retries = await self.ledger.count_retries("pending")
            self._live_rows.discard(row.id)
            flight.remaining -= 1
            if flight.remaining <= 0:
                self._give_slot()
        except BaseException as exc:
            self._fail(exc)
            raise

    async def _batch_failed(self, row: ChunkRow, info: BatchInfo) -> None:
        """The provider failed a batch as a whole (OpenAI: enqueued token limit, a bad file): each of its
        requests has used an attempt and waits for the next, as a transient error would; out of attempts, it
        is parked `failed` and the job ends unfinished (a later run gives it one more attempt)."""
        assert self.ledger is not None
        reason = info.error or "no reason given"
        last = orjson.dumps({"batch_id": info.id, "error": reason})
        limit = self.settings.max_attempts
        park = [(cid, request, before + 1, "pending" if before + 1 < limit else "failed", last)
                for cid, request, before in await self._requests_of(row)]
        await self.ledger.record_failed(row.id, park=park, note=reason)
        retrying = sum(1 for p in park if p[3] == "pending")
        log.error("batch %s failed at the provider (%s): %s of its %s request(s) will be sent again",
                  info.id, reason, f"{retrying:,}", f"{len(park):,}")
        self.budget.in_flight.pop(row.id, None)
        self._pending_retries = await self.ledger.count_retries("pending")

    async def _requests_of(self, row: ChunkRow) -> list[tuple[str, bytes, int]]:
        """(custom_id, request line, attempts made before this batch) of the requests a chunk row sent."""
        assert self.ledger is not None
        if row.kind == "retry":
            return await self.ledger.retry_requests(row.id)
        return [(c, r, 0) for r, c, _ in await self._input_parts(row)]

    async def _input_parts(self, row: ChunkRow) -> list[tuple[bytes, str, int]]:
        """(request line, custom_id, index in the root chunk) of an input chunk row, refused ones left out."""
        assert self.ledger is not None
        refused = await self.ledger.api_rejected(row.root_seq)
        mine = list((await self._lookup(row)).items())[row.skip:row.skip + row.take]
        return [(r, c, row.skip + i) for i, (c, r) in enumerate(mine) if c not in refused]

    async def _lookup(self, row: ChunkRow) -> dict[str, bytes]:
        """Request lines of a chunk by custom_id, read again from the input: exactly the lines the validator
        accepted when the chunk was cut (the ledger lists the lines it refused inside the span)."""
        if row.kind == "retry":
            assert self.ledger is not None
            return {c: r for c, r, _ in await self.ledger.retry_requests(row.id)}
        out: dict[str, bytes] = {}
        check_request = self.provider.check_request
        assert row.start_file is not None and row.end_file is not None
        span = span_blocks(self.sources, (row.start_file, row.start_pos or 0, row.start_line or 1),
                           (row.end_file, row.end_pos or 0))
        skipped = row.skipped_lines()
        async with aclosing(span) as blocks:
            async for block in blocks:
                fi = block.file_index
                for no, raw in enumerate(block.lines, block.first_line):
                    if type(raw) is not bytes or (skipped and (fi, no) in skipped):
                        continue
                    try:
                        obj = orjson.loads(raw)
                        cid = obj["custom_id"]
                    except (orjson.JSONDecodeError, TypeError, KeyError):
                        continue
                    if type(cid) is not str or cid in out:
                        continue
                    problem, line = check_request(obj, raw)
                    if problem is None and line is not None:
                        out[cid] = line
        return out

    # -- summary --------------------------------------------------------------------------------

    def write_summary(self, result: JobResult, started: float, rejects: Rejects) -> dict[str, Any]:
        assert self.ledger is not None
        c = self.ledger.counters()
        retries = self.ledger.retry_counts()
        wall = time.time() - started
        finished = int(sum(c.get(k, 0) for k in ("succeeded", "errored", "expired", "canceled")))
        http_calls: dict[str, int] = {}
        if self.http is not None:
            for (endpoint, status), n in self.http.stats.calls.items():
                http_calls[f"{endpoint} {status}"] = http_calls.get(f"{endpoint} {status}", 0) + n
        summary = {
            "state": ("done" if result.exit_code == 0 else "cancelled" if self.cancelled
                      else "paused" if result.exit_code == ExitCode.AUTH else "incomplete"),
            "message": result.message,
            "exit_code": result.exit_code,
            "provider": self.settings.provider,
            "inputs": self.inputs,
            "requests": {
                "lines_read": self.stats.lines_read,
                "accepted": self.stats.accepted,
                "rejected": rejects.count,
                "refused_by_api": int(c.get("api_rejected", 0)),
                "finished": finished,
                "waiting_retry": retries.get("pending", 0) + retries.get("assigned", 0),
                "canceled_parked": retries.get("canceled", 0),
                "in_failed_batches": retries.get("failed", 0),
            },
            "results": {k: int(c.get(k, 0)) for k in ("succeeded", "errored", "expired", "canceled")},
            "errored_after_all_attempts": int(c.get("errored_transient_final", 0)),
            "attempts": {
                "requests_sent": int(c.get("requests_sent", 0)),
                "requests_retried": int(c.get("retried", 0)),
                "max_attempts": self.settings.max_attempts,
                **{k.removeprefix("final_"): int(v) for k, v in sorted(c.items()) if k.startswith("final_after_")},
            },
            "batches": {
                "created": int(c.get("batches_created", 0)),
                "adopted": int(c.get("batches_adopted", 0)),
                "collected": int(c.get("batches_collected", 0)),
                "failed": int(c.get("batches_failed", 0)),
                "create_outcome_unknown": int(c.get("creates_unknown", 0)),
            },
            "tokens": {k: int(c.get(f"{k}_tokens", 0)) for k in ("input", "output", "cache_write", "cache_read",
                                                                   "cache_write_1h")},
            "cost_usd": round(c.get("cost_usd", 0.0), 6),
            "unknown_price_models": sorted(self.prices.unknown),
            "estimate": against_usage(self.ledger.read_meta().get("estimate"), c),
            "wall_time_s": round(wall, 3),
            "throughput_rps": round(self.stats.finished / wall, 1) if wall > 0 else None,
            "time_to_first_submit_s": (round(self.stats.first_submit_s, 3)
                                       if self.stats.first_submit_s is not None else None),
            "http": {"calls": http_calls, "retries": self.stats.retries,
                     "results_downloads_restarted": getattr(getattr(self, "collector", None),
                                                            "downloads_restarted", 0)},
            "polls": ({"retrieve": self.poller.stats.retrieves, "list": self.poller.stats.lists}
                      if self.poller is not None else {}),
        }
        path = os.path.join(self.out_dir, "summary.json")
        tmp = path + ".tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(orjson.dumps(summary, option=orjson.OPT_INDENT_2))
        os.replace(tmp, path)
        return summary


def first_error(eg: BaseExceptionGroup) -> BaseException:
    """The first real error in a task group's exception group (cancellations are its echoes)."""
    for exc in eg.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            return first_error(exc)
        if not isinstance(exc, asyncio.CancelledError):
            return exc
    return eg.exceptions[0]


def make_provider_headers(settings: Settings) -> dict[str, str]:
    from batch_scheduler.providers import headers_for
    return headers_for(settings)


def auth_message(err: BaseException, settings: Settings) -> str:
    status = getattr(err, "status", None)
    return (f"the API refused the key (HTTP {status}): check ANTHROPIC_API_KEY / CLAUDE_API_KEY "
            f"(or --provider's key) and run the same command again; every batch in flight is kept in the "
            f"ledger and will be picked up")
