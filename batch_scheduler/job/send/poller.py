"""Stage 4: one poll loop tracks every batch in flight.

Each batch is polled on its own interval: it starts at poll_min and backs off by 1.5x towards
poll_max, with +-20% jitter so that batches created together do not poll together. When several
batches are due at once, one list call (up to 1,000 batches a page) stands for their retrieve calls.
Ended batches are handed to `on_ended`; the loop itself never downloads.

A 404 for a batch this job recorded is a ghost for a while: the real API has answered so for a
second or so after a successful create, and again briefly mid-run (anthropic-sdk-python#1432). It is
polled again on its schedule (backing off as usual) for up to `not_found_grace_s` since it was
tracked or last answered; past that the run stops (`BatchVanished`, resumable) naming the batch.

Answers are untrusted: a retrieve answer of another shape (`errors.BadAnswer`) is asked again on the
batch's schedule, up to BAD_ANSWERS_MAX times in a row, then the run stops with its message (resumable).
A list call refused (a 400, or a page of another shape) falls back to retrieving each batch, and the
poller lists no more in this run; the list walk itself is bounded (providers.common.list_since).
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from batch_scheduler.core import errors
from batch_scheduler.providers.base import BatchInfo, BatchState

log = logging.getLogger("batch_scheduler.poller")

LIST_WHEN_DUE = 4  # batches due at once before one list call replaces their retrieves
RETRIEVES_AT_ONCE = 16
BAD_ANSWERS_MAX = 5  # retrieve answers of another shape in a row, for one batch, before the run stops


class Polled(Protocol):
    """What the poller asks of a provider: one batch, and the batches made since a time."""

    async def get(self, batch_id: str) -> BatchInfo: ...

    def recent(self, since: float) -> AsyncIterator[BatchInfo]: ...


@dataclass
class Tracked:
    batch_id: str
    payload: Any  # what on_ended gets back (the engine's flight record)
    created_at: float | None
    interval_s: float
    last_answer: float  # clock time it was tracked, or last seen by a retrieve or a list
    polls: int = 0
    bad_answers: int = 0  # retrieve answers of another shape since its last good one


@dataclass
class PollStats:
    retrieves: int = 0
    lists: int = 0
    not_found: int = 0  # 404s for a batch of ours, polled again within the grace


class Poller:
    def __init__(self, provider: Polled, on_ended: Callable[[Any, BatchInfo], Awaitable[None]], *,
                 poll_min_s: float, poll_max_s: float, not_found_grace_s: float = 300.0,
                 clock: Callable[[], float] = time.monotonic, rng: random.Random | None = None):
        self.provider = provider
        self._on_ended = on_ended
        self._min = poll_min_s
        self._max = poll_max_s
        self._grace = not_found_grace_s
        self._clock = clock
        self._rng = rng or random.Random()
        self._heap: list[tuple[float, int, str]] = []
        self._tracked: dict[str, Tracked] = {}
        self._seq = 0
        self._wake = asyncio.Event()
        self._stopping = False
        self._list_refused = False  # the provider refused a list call: retrieve each batch from then on
        self.stats = PollStats()

    def __len__(self) -> int:
        return len(self._tracked)

    def track(self, batch_id: str, payload: Any, created_at: float | None = None, *, now: bool = False) -> None:
        t = Tracked(batch_id, payload, created_at, self._min, self._clock())
        self._tracked[batch_id] = t
        self._schedule(t, 0.0 if now else self._min)

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()

    def _schedule(self, t: Tracked, delay: float) -> None:
        self._seq += 1
        jittered = delay * self._rng.uniform(0.8, 1.2)
        heapq.heappush(self._heap, (self._clock() + jittered, self._seq, t.batch_id))
        self._wake.set()

    async def run(self) -> None:
        while not self._stopping:
            now = self._clock()
            due: list[Tracked] = []
            while self._heap and self._heap[0][0] <= now:
                _, _, bid = heapq.heappop(self._heap)
                if bid in self._tracked:
                    due.append(self._tracked[bid])
            if not due:
                self._wake.clear()
                timeout = (self._heap[0][0] - now) if self._heap else None
                try:
                    await asyncio.wait_for(self._wake.wait(), timeout)
                except TimeoutError:
                    pass
                continue
            await self._poll(due)

    async def _poll(self, due: list[Tracked]) -> None:
        infos: dict[str, BatchInfo] = {}
        if len(due) >= LIST_WHEN_DUE and not self._list_refused:
            infos = await self._list(due)
        rest = [t for t in due if t.batch_id not in infos]
        sem = asyncio.Semaphore(RETRIEVES_AT_ONCE)
        vanished: list[errors.SchedulerError] = []

        async def one(t: Tracked) -> None:
            async with sem:
                self.stats.retrieves += 1
                try:
                    infos[t.batch_id] = await self.provider.get(t.batch_id)
                    t.bad_answers = 0
                except errors.BadAnswer as err:
                    t.bad_answers += 1
                    if t.bad_answers >= BAD_ANSWERS_MAX:
                        vanished.append(errors.BadAnswer(f"{err} ({t.bad_answers} answers in a row); the "
                                                         f"ledger keeps the batch"))
                    else:
                        log.warning("poll %s: %s; will poll again", t.batch_id, err)
                except errors.NotFound:
                    if (gone := self._not_found(t)) is not None:
                        vanished.append(gone)
                except errors.TransientError as err:
                    log.warning("poll %s: %s; will poll again", t.batch_id, err)

        if rest:
            async with asyncio.TaskGroup() as tg:
                for t in rest:
                    tg.create_task(one(t))
        if vanished:
            raise vanished[0]
        now = self._clock()
        for t in due:
            t.polls += 1
            info = infos.get(t.batch_id)
            if info is not None:
                t.last_answer = now
            if info is not None and info.state is not BatchState.IN_PROGRESS:
                del self._tracked[t.batch_id]
                await self._on_ended(t.payload, info)
            else:
                t.interval_s = min(self._max, t.interval_s * 1.5) if t.polls > 1 else t.interval_s
                self._schedule(t, t.interval_s)

    def _not_found(self, t: Tracked) -> errors.BatchVanished | None:
        """A 404 for one of our batches: a ghost within the grace (None), else what stops the run."""
        silent = self._clock() - t.last_answer
        if silent > self._grace:
            return errors.BatchVanished.of(t.batch_id, "retrieve", self._grace)
        self.stats.not_found += 1
        log.debug("poll %s: 404 %.1f s after its last answer (a batch just made may answer so for a while); "
                 "will poll again", t.batch_id, silent)
        return None

    async def _list(self, due: list[Tracked]) -> dict[str, BatchInfo]:
        wanted = {t.batch_id for t in due}
        known = [t.created_at for t in due if t.created_at is not None]
        since = (min(known) - 60.0) if known else time.time() - 86_400 * 2
        found: dict[str, BatchInfo] = {}
        try:
            self.stats.lists += 1
            async for info in self.provider.recent(since):
                if info.id in wanted:
                    found[info.id] = info
                    if len(found) == len(wanted):
                        break
        except errors.TransientError as err:
            log.warning("list batches: %s; falling back to retrieve", err)
        except (errors.RequestRejected, errors.ProtocolError) as err:
            self._list_refused = True
            log.warning("list batches: %s; retrieving each batch from now on", err)
        return found
