"""What the API modules share: one `SimContext`, built once by the server and handed to each API.

It holds the state of the simulated provider (the config, the clock, the seeded random draws, the
stats, the store of batches, the prompt cache) and the steps every handler takes with it (the time
now, the spend limit, the ghost window, adding a batch, planning a download). The API modules know
this object, never the server: the server composes them (server.py), nothing imports it back.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import batch_scheduler.simulator.faults as faults
from batch_scheduler.simulator.config import SimConfig
from batch_scheduler.simulator.counting import PromptCache
from batch_scheduler.simulator.store import Batch, Outcome, Store


def new_stats() -> dict[str, Any]:
    return {"creates": 0, "requests_created": 0, "lost_creates": 0, "faults": {}, "calls": {},
            "retrieves": 0, "lists": 0, "cancels": 0, "deletes": 0, "uploads": 0,
            "results_downloads": 0, "cut_downloads": 0, "ghost_404s": 0, "missing_results": 0,
            "request_timeouts": 0, "queue_full": 0, "spend_limited": 0, "billing_errors": 0,
            "token_limit_failures": 0, "count_tokens": 0, "peak_queued_requests": 0,
            "peak_enqueued_tokens": 0, "peak_enqueued_tokens_by_model": {},
            "realtime_calls": 0, "realtime_rate_limited": 0,
            "tokens": {"input": 0, "output": 0, "cache_write_5m": 0, "cache_write_1h": 0, "cache_read": 0}}


@dataclass(eq=False)
class SimContext:
    """The simulated provider's state. `config` and `clock` may be replaced while it serves (tests
    switch faults on, or move time); `rng` restarts from a seed with `reseed`."""

    config: SimConfig
    clock: Callable[[], float] = time.monotonic
    rng: random.Random = field(init=False)
    stats: dict[str, Any] = field(default_factory=new_stats)
    store: Store = field(default_factory=Store)
    prompt_cache: PromptCache = field(default_factory=PromptCache)
    clock0: float = field(init=False)
    wall0: float = field(init=False)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.config.seed)
        self.clock0 = self.clock()
        self.wall0 = time.time()

    # -- time and randomness ----------------------------------------------------------------------

    def now(self) -> float:
        return self.clock()

    def wall_time(self) -> float:
        """Epoch seconds that follow the simulator clock (a fake clock moves timestamps too)."""
        return self.wall0 + (self.clock() - self.clock0)

    def reseed(self, seed: int | None) -> None:
        self.rng = random.Random(seed)

    # -- shared steps of handlers -----------------------------------------------------------------

    def check_spend(self) -> None:
        """The spend-limit 429 once `spend_cap` requests were created."""
        cap = self.config.spend_cap
        if cap is not None and self.stats["requests_created"] >= cap:
            self.stats["spend_limited"] += 1
            raise faults.spend_limit_error(self.wall_time())

    def ghost(self, batch: Batch) -> bool:
        """Whether `batch` answers 404 now (its ghost window after create); counted."""
        if faults.ghost(self.config, batch.created_at, self.now()):
            self.stats["ghost_404s"] += 1
            return True
        return False

    def add_batch(self, batch: Batch) -> None:
        """Store a new batch; count what is billed (requests, tokens) and the peaks of the queues."""
        self.store.add(batch)
        stats = self.stats
        stats["creates"] += 1
        stats["requests_created"] += batch.n
        stats["missing_results"] += len(batch.missing)
        stats["request_timeouts"] += batch.outcomes.count(Outcome.REQUEST_TIMEOUT)
        self._count_tokens(batch)
        now = self.now()
        if "enqueued_tokens" in batch.extra:  # an OpenAI-style API: a queue per model
            model = batch.extra.get("model")
            if model and not batch.extra.get("errors"):
                tokens = self.store.enqueued_tokens(now, model, batch.kind)
                by_model = stats["peak_enqueued_tokens_by_model"]
                by_model[model] = max(by_model.get(model, 0), tokens)
                stats["peak_enqueued_tokens"] = max(stats["peak_enqueued_tokens"], tokens)
        else:
            stats["peak_queued_requests"] = max(stats["peak_queued_requests"], self.store.queued(now))

    def _count_tokens(self, batch: Batch) -> None:
        """Tokens of the requests that will succeed, by kind (what a client would be billed for)."""
        tokens = self.stats["tokens"]
        succeeded = Outcome.SUCCEEDED
        done = [i for i, outcome in enumerate(batch.outcomes) if outcome == succeeded]
        in_tokens, out_tokens = batch.in_tokens, batch.out_tokens
        tokens["input"] += sum([in_tokens[i] for i in done])
        tokens["output"] += sum([out_tokens[i] for i in done])
        cached = [split for i, split in batch.cache.items() if batch.outcomes[i] == succeeded]
        for five, hour, read in cached:
            tokens["cache_write_5m"] += five
            tokens["cache_write_1h"] += hour
            tokens["cache_read"] += read

    def download_plan(self, n: int, lines: int | None = None) -> tuple[list[int], int | None]:
        """A shuffled order of `n` requests, and at which of the `lines` (default n) sent to cut the
        download (None: send it all)."""
        lines = n if lines is None else lines
        self.stats["results_downloads"] += 1
        order = list(range(n))
        self.rng.shuffle(order)
        cut_at = None
        if lines and self.config.cut_rate and self.rng.random() < self.config.cut_rate:
            cut_at = self.rng.randrange(lines)
            self.stats["cut_downloads"] += 1
        return order, cut_at
