"""One job: its store, its inputs, and what is durable there (ledger, shards, rejected lines).

A job is known by its inputs (path, size and edge hashes of each) and the options that shape its
batches, recorded in the ledger by the first run (state/identity.py). A later run over the same output
must bring the same inputs and options, and find the shards at least as long as the ledger records;
otherwise it is another job's output and nothing is written into it. A run starts from what the job
holds: spend so far, requests waiting for another attempt, whether it was cancelled, and the
`anthropic-version` it was started with (a resumed job keeps its own, unless this command line names
another).

One process at a time: `Job.open` takes the store's lock (`core.joblock` on the job directory)
before it opens anything, and `Job.close` gives it back; a second run, resume or daemon job is
refused at once. A cluster job has no lock of its own: its claim's lease is the lock. Then the store
claims its output for the job (state/owner.py: one owner per output, in every mode).

Where the job's durable state lives is its store (state/stores.py): `LocalStore(DIR)` is the job
directory; `BucketRunStore` (`run --out s3://...`) and a cluster claim's store keep results as
write-once objects.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from batch_scheduler.core.joblock import JobLock
from batch_scheduler.core.options import BY_NAME, JOB_OPTIONS
from batch_scheduler.core.settings import Settings
from batch_scheduler.job.input.reader import Source, pin_inputs
from batch_scheduler.job.input.sources import make_sources
from batch_scheduler.job.input.validate import Rejects
from batch_scheduler.job.money.pricing import PriceTable
from batch_scheduler.job.observe import JobStats
from batch_scheduler.providers import provider_class
from batch_scheduler.state.identity import VERSION_KEY
from batch_scheduler.state.jobdir import finished
from batch_scheduler.state.ledger import Ledger
from batch_scheduler.state.ledger.sqlite import RetryState
from batch_scheduler.state.shards import ShardSet
from batch_scheduler.state.stores import LocalStore

log = logging.getLogger("batch_scheduler.engine")  # one log for the engine's pieces

EARLIER_DEFAULT_VERSION = "2023-06-01"  # what versions of this program before the key sent by default


@dataclass
class Start:
    """What a run starts from."""

    cancelled: bool  # `cancel DIR` marked the job (and this run does not --retry-cancelled)
    spent_usd: float
    pending_retries: int  # requests parked for another attempt


class Job:
    def __init__(self, settings: Settings, out_dir: str, inputs: list[str], ledger: Ledger, shards: ShardSet,
                 rejects: Rejects, *, stats: JobStats, prices: PriceTable, lock: JobLock | None = None,
                 store: Any = None):
        self.settings = settings
        self.store = store or LocalStore(out_dir)
        self.out_dir = out_dir
        self.inputs = inputs
        self.lock = lock
        self.ledger = ledger
        self.shards = shards
        self.rejects = rejects
        self.stats = stats
        self.prices = prices
        self.sources: list[Source] = make_sources(inputs, settings)
        pin_inputs(self.sources, ledger.read_meta().get("inputs") or [])  # objects: read at their start's ETag

    @classmethod
    async def open(cls, settings: Settings, out_dir: str, inputs: list[str], *, remembered: dict,
                   stats: JobStats, prices: PriceTable, owner: str = "batch-scheduler run", store: Any = None) -> Job:
        """The job in out_dir (made by the first run); JobMismatch, with nothing written, if it is another's;
        JobBusy if another process holds it (`owner` names this one to a process refused in turn)."""
        store = store or LocalStore(out_dir)
        lock = store.lock(owner)

        def release() -> None:
            if lock is not None:
                lock.release()
        try:
            ledger = store.open_ledger(settings, inputs, remembered)
        except BaseException:
            release()
            raise
        try:
            await store.own(ledger)  # the output is this job's (state/owner.py) before anything is written there
            settings = keep_version(as_started(settings, ledger.read_meta()), ledger, remembered)
            shards = store.open_shards(settings.shards, await ledger.shard_offsets(settings.shards))
        except BaseException:
            ledger.close()
            release()
            raise
        try:
            rejects = Rejects(store.rejects_path(), inputs)
        except BaseException:
            shards.close()
            ledger.close()
            release()
            raise
        try:
            for cid, msg in (await ledger.api_rejected()).items():
                rejects.add(None, None, cid, f"refused by the API: {msg}")
            return cls(settings, out_dir, inputs, ledger, shards, rejects, stats=stats, prices=prices, lock=lock,
                       store=store)
        except BaseException:
            rejects.close(complete=False)
            shards.close()
            ledger.close()
            release()
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

    def close_files(self, *, read_all: bool) -> None:
        """The rejected list (it replaces the last one only if this run read the whole input) and the shards;
        the ledger stays open for the summary."""
        try:
            self.rejects.close(complete=read_all)
        except OSError as err:  # a full disk: the list of the last complete read stays
            log.error("cannot write %s/rejected.jsonl (%s); the previous list stays", self.out_dir, err)
        finally:
            self.shards.close()

    def close(self) -> None:
        """The ledger, then the lock: the next process may have the job."""
        try:
            self.ledger.close()
        finally:
            if self.lock is not None:
                self.lock.release()


def keep_version(settings: Settings, ledger: Ledger, remembered: dict) -> Settings:
    """Settings with the job's own `anthropic-version`: the one in the ledger, unless this command line
    names one (which is kept from then on). A job from before the ledger kept it ran with what its flags
    said, else the environment's, else the earlier default."""
    meta = ledger.read_meta()
    given = settings.anthropic_version
    if "anthropic_version" in remembered:
        version = given
    elif VERSION_KEY in meta:
        version = meta[VERSION_KEY]
    else:
        from_flags = (meta.get("flags") or {}).get("anthropic_version")
        version = from_flags or (given if given != BY_NAME["anthropic_version"].default else EARLIER_DEFAULT_VERSION)
    if meta.get(VERSION_KEY) != version:
        if VERSION_KEY in meta:
            log.info("anthropic-version %s from now on (the job started with %s)", version, meta[VERSION_KEY])
        ledger.write_meta({VERSION_KEY: version})
    elif version != given and provider_class(settings.provider).sends_anthropic_version:
        log.info("anthropic-version %s, the one the job started with (not %s)", version, given)
    return settings if version == given else settings.replace(anthropic_version=version)


def as_started(settings: Settings, meta: dict) -> Settings:
    """The settings with what the job's first run fixed: the name its generated custom_ids carry (none for a
    job started before ids carried one, so its ids stay what they were), and for a shaping option newer than
    the job, what the job ran with before it existed (its batches are cut as they were)."""
    changes: dict[str, Any] = {}
    name = meta.get("job_name", "")
    if name != settings.job_name:
        changes["job_name"] = name
    recorded = meta.get("shaping") or {}
    for option in JOB_OPTIONS:
        if option.shapes and option.before_it_existed is not None and option.name not in recorded:
            changes[option.attr] = option.before_it_existed
    return settings.replace(**changes) if changes else settings
