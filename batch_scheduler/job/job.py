"""One job: its directory, its inputs, and what is durable there (ledger, shards, rejected lines).

A job is known by its inputs (path, size and edge hashes of each) and the options that shape its
batches, recorded in the ledger by the first run. A later run over the same directory must bring the
same inputs and options, and find the shards at least as long as the ledger records; otherwise it is
another job's directory and nothing is written into it. A run starts from what the job holds: spend
so far, requests waiting for another attempt, whether it was cancelled, and the `anthropic-version`
it was started with (a resumed job keeps its own, unless this command line names another).

One process at a time: `Job.open` takes the store's lock (`core.joblock` on the job directory)
before it opens anything, and `Job.close` gives it back; a second run, resume or daemon job is
refused at once. A cluster job has no lock of its own: its claim's lease is the lock.

Where the job's durable state lives is its store: `LocalStore(DIR)` is the job directory (DIR/ledger.db,
DIR/results/shard-NNNNN.jsonl, DIR/rejected.jsonl, DIR/summary.json); the cluster's stores
(`batch_scheduler.cluster.store`) keep the ledger in PostgreSQL (or a local state directory for
`run --out s3://...`) and results as write-once objects. A store has `where` (named in messages),
`fingerprints(inputs)`, `lock(owner)` (a JobLock, or None), `open_ledger(settings, inputs, remembered)`, `open_shards(n, offsets)`, `rejects_path()`,
`write_summary(summary)` and `async publish(ok)` (after a run, its files closed: what the store makes
visible to readers).
"""

from __future__ import annotations

import errno
import logging
import os
import time
from dataclasses import dataclass
from typing import Any

import orjson

from batch_scheduler.core import errors
from batch_scheduler.core.joblock import JobLock
from batch_scheduler.core.options import BY_NAME, JOB_OPTIONS, kept_flags
from batch_scheduler.core.settings import Settings
from batch_scheduler.job.input.reader import Source, fingerprint
from batch_scheduler.job.input.sources import make_sources
from batch_scheduler.job.input.validate import Rejects
from batch_scheduler.job.money.pricing import PriceTable
from batch_scheduler.job.observe import JobStats
from batch_scheduler.job.view.summary import finished, write_summary
from batch_scheduler.providers import provider_class
from batch_scheduler.state import ledger as ledgers
from batch_scheduler.state.ledger import Ledger
from batch_scheduler.state.shards import ShardSet
from batch_scheduler.state.sqlite import RetryState

log = logging.getLogger("batch_scheduler.engine")  # one log for the engine's pieces

VERSION_KEY = "anthropic_version"  # ledger meta: the version the job's requests are sent (and checked) under
EARLIER_DEFAULT_VERSION = "2023-06-01"  # what versions of this program before the key sent by default


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

    def lock(self, owner: str) -> JobLock:
        return lock_dir(self.out_dir, owner, "--out")

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


def lock_dir(path: str, owner: str, what: str) -> JobLock:
    """The lock of a job directory (made if need be); UsageError when it cannot be a directory of ours."""
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
        return JobLock.take(path, owner)
    except (FileExistsError, NotADirectoryError):
        raise errors.UsageError(f"{what} {path}: not a directory") from None
    except OSError as err:
        if err.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            raise
        raise errors.UsageError(f"{what} {path}: cannot write there ({err.strerror})") from None


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


def open_ledger(settings: Settings, out_dir: str, inputs: list[str], remembered: dict) -> Ledger:
    prints = [fingerprint(p) for p in inputs]  # before the ledger opens: an unreadable input leaks nothing
    path = os.path.join(out_dir, "ledger.db")
    here = results_here(out_dir)
    if here and (not os.path.exists(path) or os.path.getsize(path) == 0):
        raise errors.JobMismatch(unknown_results(out_dir, here))  # and no ledger.db is made where none was
    ledger = ledgers.open_ledger(path)
    if not ledger.read_meta():
        if here:  # a ledger that lost its -wal file before it knew the job
            ledger.close()
            raise errors.JobMismatch(unknown_results(out_dir, here))
    else:
        summarised, known = summary_finished(out_dir), finished(ledger.counters())
        if summarised > known:  # the ledger is older than the results it wrote
            ledger.close()
            raise errors.JobMismatch(unknown_results(out_dir, f"summary.json counts {summarised:,} finished "
                                                              f"requests, the ledger {known:,}"))
    return check_identity(ledger, settings, out_dir, prints, remembered)


def check_identity(ledger: Ledger, settings: Settings, out_dir: str, prints: list[dict], remembered: dict) -> Ledger:
    """The first run records the job's inputs and batch options; a later one must bring the same (else
    JobMismatch, the ledger closed)."""
    meta = ledger.read_meta()
    shaping = settings.shaping()
    if not meta:
        ledger.write_meta({"inputs": prints, "shaping": shaping, "created_at": time.time(), "version": 1,
                           "flags": kept_flags(remembered), "job_name": settings.job_name,
                           VERSION_KEY: settings.anthropic_version})
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
    # an option newer than the job's ledger is no change (such a job resumes after an upgrade; as_started gives
    # the run what the job ran with before the option existed)
    before = {k: meta["shaping"].get(k, shaping[k]) for k in shaping}
    changed = [k for k in shaping if before[k] != shaping[k]]
    if changed:
        ledger.close()
        detail = ", ".join(f"{k}: was {before[k]!r}, now {shaping[k]!r}" for k in changed)
        raise errors.JobMismatch(f"{out_dir} was started with other batch options ({detail}); "
                                 f"run again with the same options, or {how}")
    return ledger


def results_here(out_dir: str) -> str:
    """What out_dir holds of a job's results ("" for nothing): bytes in the shards, finished requests counted."""
    results = os.path.join(out_dir, "results")
    size = 0
    if os.path.isdir(results):
        with os.scandir(results) as entries:
            size = sum(e.stat().st_size for e in entries if e.name.endswith(".jsonl") and e.is_file())
    counted = summary_finished(out_dir)
    return ", ".join(part for part in (f"{size:,} bytes of results" if size else "",
                                       f"a summary of {counted:,} finished requests" if counted else "") if part)


def summary_finished(out_dir: str) -> int:
    try:
        with open(os.path.join(out_dir, "summary.json"), "rb") as f:
            n = orjson.loads(f.read()).get("requests", {}).get("finished", 0)
    except (OSError, orjson.JSONDecodeError, AttributeError):
        return 0
    return n if isinstance(n, int) else 0


def unknown_results(out_dir: str, here: str) -> str:
    return (f"{out_dir} holds results its ledger.db does not know ({here}): the ledger is missing, empty, or "
            f"lost its ledger.db-wal file. Running would send everything again and pay for it twice; put the "
            f"job's ledger.db (and ledger.db-wal) back, or move results/ and summary.json away to start afresh")


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


def open_shards(out_dir: str, n: int, offsets: list[int]) -> ShardSet:
    shards = ShardSet(out_dir, n)
    for i, (have, want) in enumerate(zip(shards.offsets, offsets, strict=True)):
        if have < want:
            shards.close()
            raise errors.JobMismatch(f"shard {i} is shorter ({have} bytes) than the ledger records "
                                     f"({want}); results were removed by hand, start fresh")
    shards.rollback(offsets)  # drop lines of downloads that were interrupted
    return shards
