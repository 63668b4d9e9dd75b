"""One run of a job: input to shards inside one task group, resumable at any instant.

    producer -> sender -> poller -> endings -> collector -> shards + ledger
    (what next) (create)  (one loop) (one batch at a time)

`Run` only wires the collaborators, each built with what it needs, and runs them in the engine's task
group: the `producer` (what to send next: the input, what earlier runs left, parked requests, the
sweep), the `sender` (create, send again, parts, a full queue, the spend limit), the `poller` and the
`endings` (collect an ended batch, or send it again). `InFlight` is the book they share of the work in
flight. What a batch's ending leaves to do comes back as an `Ending` value, acted on in one place here
(`_then`).

Room in the provider's queue (requests, or estimated tokens per model: see `admission`) is taken
before a batch is sent and given back when the provider says it ended. A slot (--concurrency) is taken
before a chunk is sent and given back once its results are durable. A spend limit at create is a pause:
nothing new is sent, what is in flight is still collected, and the run ends with the provider's message
(`spend_limit`).
"""

from __future__ import annotations

import asyncio
import logging
import time

from batch_scheduler.core import errors
from batch_scheduler.job.admit.admission import Admission
from batch_scheduler.job.collect.collector import Collector
from batch_scheduler.job.collect.ended import Ending, Endings, Then
from batch_scheduler.job.input.batcher import BODY_WRAPPER_BYTES
from batch_scheduler.job.input.replay import Replay
from batch_scheduler.job.input.validate import Validator
from batch_scheduler.job.job import Job
from batch_scheduler.job.observe import Observer
from batch_scheduler.job.producer import Producer
from batch_scheduler.job.send.flights import InFlight, Tracked, Watched
from batch_scheduler.job.send.poller import Poller
from batch_scheduler.job.send.realtime import Answered, RealtimeLane
from batch_scheduler.job.send.route import Route
from batch_scheduler.job.send.sender import Sender
from batch_scheduler.job.send.submitter import Submitter
from batch_scheduler.providers.base import BatchInfo, Provider
from batch_scheduler.state.ledger.sqlite import RetryState

log = logging.getLogger("batch_scheduler.engine")  # one log for the engine's pieces


class Run:
    def __init__(self, job: Job, provider: Provider, replay: Replay, submitter: Submitter, collector: Collector,
                 admission: Admission, tg: asyncio.TaskGroup, *, pending_retries: int,
                 observer: Observer | None = None, answered: Answered | None = None, batch_discount: float = 0.5):
        s = job.settings
        self.collector = collector
        self._job = job
        self._provider = provider
        self._admission = admission
        self._tg = tg
        book = InFlight(admission.queues, tg)
        self.poller = Poller(Watched(provider, book.seen), self._on_ended, poll_min_s=s.poll_min_s,
                             poll_max_s=s.poll_max_s, not_found_grace_s=s.not_found_grace_s)
        self.sender = Sender(provider, job.ledger, job.stats, replay, submitter, admission, self.poller, book, tg)
        self.endings = Endings(job.ledger, job.stats, admission, collector, replay, submitter,
                               observer or Observer(), book, max_attempts=s.max_attempts)
        self.producer = Producer(job, provider, replay, Validator(provider, s.batch_bytes - BODY_WRAPPER_BYTES),
                                 admission, self.sender, self.endings, book, pending_retries=pending_retries)
        self.sender.primer = self.producer.primer
        self.route = Route(s, turnaround_s=collector.turnaround_s, oldest_out_s=self._oldest_out_s)
        if answered is not None:
            self.sender.lane = RealtimeLane(provider, answered, job.ledger, job.stats, admission, self.route,
                                            self._on_ended, concurrency=s.realtime_concurrency,
                                            discount=batch_discount)
        self._book = book

    @property
    def spend_limit(self) -> str | None:
        """The provider's message, once a create met the spend limit."""
        return self.sender.spend_limit

    @property
    def input_error(self) -> errors.InputError | None:
        """Why reading stopped before the end of the input."""
        return self.producer.input_error

    async def go(self) -> None:
        """Send every chunk, and collect every batch, this run can."""
        poll_task = self._tg.create_task(self.poller.run(), name="poller")
        watch = self._tg.create_task(self._at_deadline(), name="deadline") if self.route.deadline else None
        try:
            await self._tg.create_task(self._produce(), name="producer")
            await poll_task
        finally:
            if watch is not None:
                watch.cancel()

    def _oldest_out_s(self, now: float) -> float | None:
        """How long this run's first batch has been out, while any is (a round trip is at least that)."""
        stats = self._job.stats
        if stats.first_submit_s is None or not self._admission.in_flight:
            return None
        return max(0.0, time.monotonic() - stats.started - stats.first_submit_s)

    async def _at_deadline(self) -> None:
        """--at-deadline cancel|realtime: at the deadline, the batches still out are cancelled (what they
        did not answer comes back cancelled; with `realtime` it goes again, through the realtime lane)."""
        assert self.route.deadline is not None
        await asyncio.sleep(max(0.0, self.route.deadline - time.time()))
        if self.route.at_deadline == "wait":
            return
        for batch_id in self._book.batch_ids():
            try:
                await self._provider.cancel(batch_id)
            except errors.TransientError as err:
                log.warning("at the deadline: batch %s not cancelled (%s); it is collected when it ends",
                            batch_id, err)

    async def _requeue_cancelled(self) -> int | None:
        """--at-deadline realtime: requests of a batch cancelled at the deadline wait for the realtime lane."""
        if self.route.at_deadline != "realtime" or not self.route.past_deadline():
            return None
        if not await self._job.ledger.requeue(RetryState.CANCELLED):
            return None
        return await self._job.ledger.count_retries(RetryState.PENDING)

    async def _produce(self) -> None:
        try:
            await self.producer.run()
        finally:
            self.poller.stop()

    async def _on_ended(self, payload: Tracked, info: BatchInfo) -> None:
        self.endings.ended(payload, info)
        task = self._tg.create_task(self._collect(payload, info), name=f"collect batch {info.id}")
        task.add_done_callback(self.endings.collected)

    async def _collect(self, payload: Tracked, info: BatchInfo) -> None:
        ending = await self.endings.collect(payload, info)
        await self._then(ending)
        if ending.then is Then.DONE:
            self.producer.primer.ended(payload.row.id)
        self._job.stats.turnaround_s = self.collector.turnaround_s()  # what the ETA and the deadline go by
        self._job.stats.waiting_retry = self.producer.pending_retries

    async def _then(self, ending: Ending) -> None:
        """The one place what a batch's ending leaves to do is done."""
        if ending.pending_retries is not None:
            self.producer.pending_retries = ending.pending_retries
        if (pending := await self._requeue_cancelled()) is not None:
            self.producer.pending_retries = pending
        if ending.then is Then.DONE:
            return
        assert ending.row is not None
        if ending.then is Then.REQUEUE:
            self.sender.resend_soon(ending.row, None, ending.flight)
            return
        try:
            await self.sender.resend(ending.row, ending.parts, ending.flight)
        except BaseException as exc:
            self._admission.fail(exc)
            raise
