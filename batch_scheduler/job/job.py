"""One job: its directory, its inputs, and what is durable there (ledger, shards, rejected lines).

A job is known by its inputs (path, size and edge hashes of each) and the options that shape its
batches, recorded in the ledger by the first run. A later run over the same directory must bring the
same inputs and options, and find the shards at least as long as the ledger records; otherwise it is
another job's directory and nothing is written into it. A run starts from what the job holds: spend
so far, requests waiting for another attempt, whether it was cancelled.

Where the job's durable state lives is its store: `LocalStore(DIR)` is the job directory (DIR/ledger.db,
DIR/results/shard-NNNNN.jsonl, DIR/rejected.jsonl, DIR/summary.json); the cluster's store
(`batch_scheduler.cluster.store`) keeps the ledger in PostgreSQL and results as write-once objects.
A store has `where` (named in messages), `fingerprints(inputs)`, `open_ledger(settings, inputs,
remembered)`, `open_shards(n, offsets)`, `rejects_path()`, `write_summary(summary)` and `async
publish(ok)` (after a run, its files closed: what the store makes visible to readers).
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from typing import Any

from batch_scheduler.core import errors
from batch_scheduler.core.ledger import Ledger, RetryState
from batch_scheduler.core.settings import Settings
from batch_scheduler.job.pricing import PriceTable
from batch_scheduler.job.progress import JobStats
from batch_scheduler.job.reader import Source, fingerprint
from batch_scheduler.job.sources import make_sources
from batch_scheduler.job.summary import finished, write_summary
from batch_scheduler.job.validate import Rejects
from batch_scheduler.job.writer import ShardSet

log = logging.getLogger("batch_scheduler.engine")  # one log for the engine's pieces


@dataclass
class Start:
    """What a run starts from."""

    cancelled: bool  # `cancel DIR` marked the job (and this run does not --retry-cancelled)
    spent_usd: float
    pending_retries: int  # requests parked for another attempt


class LocalStore:
    """A job directory on this machine: what `run` and the spool daemon use."""

    def __init__(self, out_dir: str):
        self.where = self.out_dir = out_dir

    def fingerprints(self, inputs: list[str]) -> list[dict]:
        return [fingerprint(p) for p in inputs]

    def open_ledger(self, settings: Settings, inputs: list[str], remembered: dict) -> Ledger:
        return open_ledger(settings, self.out_dir, inputs, remembered)

    def open_shards(self, n: int, offsets: list[int]) -> ShardSet:
        return open_shards(self.out_dir, n, offsets)

    def rejects_path(self) -> str:
        return os.path.join(self.out_dir, "rejected.jsonl")

    def write_summary(self, summary: dict) -> None:
        write_summary(self.out_dir, summary)

    async def publish(self, ok: bool) -> None:
        """Everything is in place already."""


class Job:
    def __init__(self, settings: Settings, out_dir: str, inputs: list[str], ledger: Ledger, shards: ShardSet,
                 rejects: Rejects, *, stats: JobStats, prices: PriceTable, store: Any = None):
        self.settings = settings
        self.store = store or LocalStore(out_dir)
        self.out_dir = out_dir
        self.inputs = inputs
        self.ledger = ledger
        self.shards = shards
        self.rejects = rejects
        self.stats = stats
        self.prices = prices
        self.sources: list[Source] = make_sources(inputs, settings)

    @classmethod
    async def open(cls, settings: Settings, out_dir: str, inputs: list[str], *, remembered: dict,
                   stats: JobStats, prices: PriceTable, store: Any = None) -> Job:
        """The job in out_dir (made by the first run); JobMismatch, with nothing written, if it is another's."""
        store = store or LocalStore(out_dir)
        ledger = store.open_ledger(settings, inputs, remembered)
        try:
            shards = store.open_shards(settings.shards, await ledger.shard_offsets(settings.shards))
        except BaseException:
            ledger.close()
            raise
        try:
            rejects = Rejects(store.rejects_path(), inputs)
        except BaseException:
            shards.close()
            ledger.close()
            raise
        try:
            for cid, msg in (await ledger.api_rejected()).items():
                rejects.add(None, None, cid, f"refused by the API: {msg}")
            return cls(settings, out_dir, inputs, ledger, shards, rejects, stats=stats, prices=prices, store=store)
        except BaseException:
            rejects.close()
            shards.close()
            ledger.close()
            raise

    async def start(self) -> Start:
        """Requests parked by earlier runs wait again (failed batches: one more attempt; cancelled ones with
        --retry-cancelled), and what the job spent and finished so far."""
        ledger, s = self.ledger, self.settings
        cancelled = not s.retry_cancelled and await ledger.is_cancelled()
        if s.retry_cancelled:
            await ledger.set_cancelled(False)
            n = await ledger.requeue(RetryState.CANCELLED)
            if n:
                log.info("%s cancelled request(s) queued again (--retry-cancelled)", n)
        n = await ledger.requeue(RetryState.FAILED)
        if n:
            log.info("%s request(s) of batches the provider failed get one more attempt", n)
        counters = await ledger.acounters()
        self.stats.finished_before = finished(counters)
        return Start(cancelled, counters.get("cost_usd", 0.0), await ledger.count_retries(RetryState.PENDING))

    def close_files(self) -> None:
        """The rejected list and the shards; the ledger stays open for the summary."""
        self.rejects.close()
        self.shards.close()


def open_ledger(settings: Settings, out_dir: str, inputs: list[str], remembered: dict) -> Ledger:
    os.makedirs(out_dir, mode=0o700, exist_ok=True)
    prints = [fingerprint(p) for p in inputs]  # before the ledger opens: an unreadable input leaks nothing
    return check_identity(Ledger(os.path.join(out_dir, "ledger.db")), settings, out_dir, prints, remembered)


def check_identity(ledger: Any, settings: Settings, out_dir: str, prints: list[dict], remembered: dict) -> Any:
    """The first run records the job's inputs and batch options; a later one must bring the same (else
    JobMismatch, the ledger closed)."""
    meta = ledger.read_meta()
    shaping = settings.shaping()
    if not meta:
        ledger.write_meta({"inputs": prints, "shaping": shaping, "created_at": time.time(), "version": 1,
                           "flags": remembered})
        return ledger
    how = f"to start fresh, use another --out or delete {out_dir}"
    if [p["path"] for p in meta["inputs"]] != [p["path"] for p in prints]:
        ledger.close()
        raise errors.JobMismatch(f"{out_dir} holds a job over other input files "
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
        raise errors.JobMismatch(f"{out_dir} was started with other batch options ({detail}); "
                                 f"run again with the same options, or {how}")
    return ledger


def open_shards(out_dir: str, n: int, offsets: list[int]) -> ShardSet:
    shards = ShardSet(out_dir, n)
    for i, (have, want) in enumerate(zip(shards.offsets, offsets, strict=True)):
        if have < want:
            shards.close()
            raise errors.JobMismatch(f"shard {i} is shorter ({have} bytes) than the ledger records "
                                     f"({want}); results were removed by hand, start fresh")
    shards.rollback(offsets)  # drop lines of downloads that were interrupted
    return shards
