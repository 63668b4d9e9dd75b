"""Priming the prompt cache: the first request of each cached prefix goes alone, and the rest waits for it.

    producer: a chunk whose prefix is not primed -> split: [its first request] + [the rest]
              the first goes (realtime, or a one-request batch), its cache_control marked `ttl: "1h"`
              -> collected -> the prefix noted primed in the ledger -> the rest goes

A cache write becomes readable only once the request that wrote it has completed, and requests inside
one batch do not read each other's writes: so the rest of a prefix is sent only after its priming
request's answer is durable, and then reads the cache for an hour. The priming request is a request of
the job (its answer is its row's, written once), not an extra call. The note (ledger meta
`primed_prefixes`) is what makes it resumable: a run killed after priming does not prime again; one
killed before the note sends the priming request again first (or adopts its batch) and waits for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from batch_scheduler.job.input.prefix import line_prefix
from batch_scheduler.state.ledger import Ledger
from batch_scheduler.state.ledger.sqlite import ChunkState

log = logging.getLogger("batch_scheduler.engine")

PRIMED_KEY = "primed_prefixes"  # ledger meta: the prefixes whose priming request was collected
CHECK_EVERY_S = 1.0  # while waiting: how often the ledger is asked whether the priming chunk is done


class Primer:
    """Which prefixes still need priming, and the priming chunks in flight (chunk id -> lane)."""

    def __init__(self, ledger: Ledger, via: str | None, body_field: str):
        self.via = via  # "realtime", "batch", or None: no priming
        self._ledger = ledger
        self._field = body_field
        self._primed: set[str] = set(ledger.read_meta().get(PRIMED_KEY) or []) if via else set()
        self.chunks: dict[int, str] = {}  # priming chunks being sent: chunk id -> "realtime" | "batch"
        self._ended: dict[int, asyncio.Event] = {}

    def wants(self, first_line: bytes) -> str | None:
        """The prefix a chunk starting with this request must prime first, or None."""
        if self.via is None:
            return None
        key = line_prefix(first_line, self._field)
        return key if key is not None and key not in self._primed else None

    def expect(self, chunk_id: int) -> None:
        """`chunk_id` is a priming chunk: the sender marks it and sends it by `via`."""
        assert self.via is not None
        self.chunks[chunk_id] = self.via
        self._ended.setdefault(chunk_id, asyncio.Event())

    def ended(self, chunk_id: int) -> None:
        """A chunk is done (collected, or nothing left to send)."""
        if (done := self._ended.get(chunk_id)) is not None:
            done.set()

    async def wait(self, chunk_id: int, key: str, held: Callable[[], bool]) -> None:
        """Until the priming chunk is done (then the prefix is noted primed), or nothing new may be sent."""
        done = self._ended[chunk_id]
        while not done.is_set() and not held():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), CHECK_EVERY_S)
            if not done.is_set():  # collected before this run expected it (a batch an earlier run sent)
                if (await self._ledger.chunk(chunk_id)).state in (ChunkState.COLLECTED, ChunkState.DROPPED):
                    done.set()
        self._ended.pop(chunk_id, None)
        self.chunks.pop(chunk_id, None)
        if done.is_set():
            await self.note(key)

    async def note(self, key: str) -> None:
        """The prefix is primed: recorded, so no later run primes it again."""
        self._primed.add(key)
        self._ledger.write_meta({PRIMED_KEY: sorted(self._primed)})  # one small synchronous write: not torn
        await self._ledger.add_counts({"cache_primed": 1})
        log.info("cache prefix %s primed: the requests sharing it go now", key)
