"""One job: its directory, its inputs, and what is durable there (ledger, shards, rejected lines).

A job is known by its inputs (path, size and edge hashes of each) and the options that shape its
batches, recorded in the ledger by the first run. A later run over the same directory must bring the
same inputs and options, and find the shards at least as long as the ledger records; otherwise it is
another job's directory and nothing is written into it. A run starts from what the job holds: spend
so far, requests waiting for another attempt, whether it was cancelled, and the `anthropic-version`
it was started with (a resumed job keeps its own, unless this command line names another).

One process at a time: `Job.open` takes the directory's lock (`core.joblock`) before it opens
anything, and `Job.close` gives it back; a second run, resume or daemon job is refused at once.
"""

from __future__ import annotations

import errno
import logging
import os
import time
from dataclasses import dataclass

import orjson

from batch_scheduler.core import errors
from batch_scheduler.core.joblock import JobLock
from batch_scheduler.core.ledger import Ledger, RetryState
from batch_scheduler.core.options import BY_NAME, kept_flags
from batch_scheduler.core.settings import Settings
from batch_scheduler.job.pricing import PriceTable
from batch_scheduler.job.progress import JobStats
from batch_scheduler.job.reader import Source, fingerprint
from batch_scheduler.job.sources import make_sources
from batch_scheduler.job.summary import finished
from batch_scheduler.job.validate import Rejects
from batch_scheduler.job.writer import ShardSet

log = logging.getLogger("batch_scheduler.engine")  # one log for the engine's pieces

VERSION_KEY = "anthropic_version"  # ledger meta: the version the job's requests are sent (and checked) under
EARLIER_DEFAULT_VERSION = "2023-06-01"  # what versions of this program before the key sent by default


@dataclass
class Start:
    """What a run starts from."""

    cancelled: bool  # `cancel DIR` marked the job (and this run does not --retry-cancelled)
    spent_usd: float
    pending_retries: int  # requests parked for another attempt


class Job:
    def __init__(self, settings: Settings, out_dir: str, inputs: list[str], ledger: Ledger, shards: ShardSet,
                 rejects: Rejects, *, stats: JobStats, prices: PriceTable, lock: JobLock | None = None):
        self.settings = settings
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
                   stats: JobStats, prices: PriceTable, owner: str = "batch-scheduler run") -> Job:
        """The job in out_dir (made by the first run); JobMismatch, with nothing written, if it is another's;
        JobBusy if another process holds it (`owner` names this one to a process refused in turn)."""
        try:
            os.makedirs(out_dir, mode=0o700, exist_ok=True)
            lock = JobLock.take(out_dir, owner)
        except (FileExistsError, NotADirectoryError):
            raise errors.UsageError(f"--out {out_dir}: not a directory") from None
        except OSError as err:
            if err.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
                raise
            raise errors.UsageError(f"--out {out_dir}: cannot write there ({err.strerror})") from None
        try:
            ledger = open_ledger(settings, out_dir, inputs, remembered)
        except BaseException:
            lock.release()
            raise
        try:
            settings = keep_version(as_started(settings, ledger.read_meta()), ledger, remembered)
            shards = open_shards(out_dir, settings.shards, await ledger.shard_offsets(settings.shards))
        except BaseException:
            ledger.close()
            lock.release()
            raise
        try:
            rejects = Rejects(os.path.join(out_dir, "rejected.jsonl"), inputs)
        except BaseException:
            shards.close()
            ledger.close()
            lock.release()
            raise
        try:
            for cid, msg in (await ledger.api_rejected()).items():
                rejects.add(None, None, cid, f"refused by the API: {msg}")
            return cls(settings, out_dir, inputs, ledger, shards, rejects, stats=stats, prices=prices, lock=lock)
        except BaseException:
            rejects.close(complete=False)
            shards.close()
            ledger.close()
            lock.release()
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
    elif version != given and settings.provider == "anthropic":
        log.info("anthropic-version %s, the one the job started with (not %s)", version, given)
    return settings if version == given else settings.replace(anthropic_version=version)


def open_ledger(settings: Settings, out_dir: str, inputs: list[str], remembered: dict) -> Ledger:
    prints = [fingerprint(p) for p in inputs]  # before the ledger opens: an unreadable input leaks nothing
    path = os.path.join(out_dir, "ledger.db")
    here = results_here(out_dir)
    if here and (not os.path.exists(path) or os.path.getsize(path) == 0):
        raise errors.JobMismatch(unknown_results(out_dir, here))  # and no ledger.db is made where none was
    ledger = Ledger(path)
    meta = ledger.read_meta()
    shaping = settings.shaping()
    if not meta:
        if here:  # a ledger that lost its -wal file before it knew the job
            ledger.close()
            raise errors.JobMismatch(unknown_results(out_dir, here))
        ledger.write_meta({"inputs": prints, "shaping": shaping, "created_at": time.time(), "version": 1,
                           "flags": kept_flags(remembered), "job_name": settings.job_name,
                           VERSION_KEY: settings.anthropic_version})
        return ledger
    summarised, known = summary_finished(out_dir), finished(ledger.counters())
    if summarised > known:  # the ledger is older than the results it wrote
        ledger.close()
        raise errors.JobMismatch(unknown_results(out_dir, f"summary.json counts {summarised:,} finished requests, "
                                                          f"the ledger {known:,}"))
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
    # an option newer than the job's ledger counts as its default there (such a job resumes after an upgrade)
    before = {k: meta["shaping"].get(k, BY_NAME[k].default) for k in shaping}
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
    job started before ids carried one, so its ids stay what they were)."""
    name = meta.get("job_name", "")
    return settings if name == settings.job_name else settings.replace(job_name=name)


def open_shards(out_dir: str, n: int, offsets: list[int]) -> ShardSet:
    shards = ShardSet(out_dir, n)
    for i, (have, want) in enumerate(zip(shards.offsets, offsets, strict=True)):
        if have < want:
            shards.close()
            raise errors.JobMismatch(f"shard {i} is shorter ({have} bytes) than the ledger records "
                                     f"({want}); results were removed by hand, start fresh")
    shards.rollback(offsets)  # drop lines of downloads that were interrupted
    return shards
