"""One job in the daemon: its settings for a run, the run, what the run's result makes of it, and,
while the key is refused or the spend limit reached, the checks that resume it.

    queued -> running -> done | failed | cancelled
                 |  \\-> queued (the daemon stopped, or a run stopped on an error: tried again later)
                 \\--> paused (the key was refused, or the provider's spend limit is reached: checked every
                          --key-check-s and at SIGHUP; or the disk is full: tried again every --key-check-s)
                          -> queued

A spend-limit pause is checked like a refused key (one cheap call); when the call gets through, the
job runs again, and its first create tells whether access is back (if not, it pauses again at once,
having sent nothing).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from batch_scheduler.core import errors
from batch_scheduler.core.http import HttpClient
from batch_scheduler.core.logs import add_secret, redact
from batch_scheduler.core.options import REMEMBERED
from batch_scheduler.core.settings import RetryPolicy, Settings
from batch_scheduler.daemon.logs import current_job, log
from batch_scheduler.daemon.slots import FairSlots
from batch_scheduler.daemon.spool import FINAL, SUMMARY_FILE, Job, JobState, read_options, write_summary
from batch_scheduler.job.admit.queue_budget import QueuePool
from batch_scheduler.job.cancel import cancel_batches
from batch_scheduler.job.engine import Engine, JobResult, disk_full
from batch_scheduler.job.observe import Observer
from batch_scheduler.job.outcome import (
    Cause,
    History,
    NextState,
    Rules,
    Transition,
    next_state,
    outcome_line,
)
from batch_scheduler.job.send.claims import Claims, shared
from batch_scheduler.providers import build_settings, headers_for, make_provider, missing_key_message
from batch_scheduler.state.ledger import open_ledger

PROBE_BATCH_ID = "msgbatch_daemon_key_check"  # no such batch: 404 means the key got through
PROBE_RETRY = RetryPolicy(attempts=3, deadline_s=20.0, initial_wait_s=0.5, max_wait_s=5.0)
CANCELLING = "cancel requested through the HTTP API; collecting what its batches finished"


@dataclass
class Prepared:
    settings: Settings
    remembered: dict[str, Any]
    cap: int | None  # the job's own concurrency, within the shared budget


@dataclass
class Totals:
    """Counters of finished runs (live runs are added when asked)."""

    http_calls: Counter = field(default_factory=Counter)
    http_retries: Counter = field(default_factory=Counter)
    download_bytes: int = 0
    polls: Counter = field(default_factory=Counter)
    key_checks: Counter = field(default_factory=Counter)

    def add_engine(self, engine: Engine) -> None:
        if engine.http is not None:
            for (endpoint, status), n in engine.http.stats.calls.items():
                self.http_calls[(endpoint, str(status))] += n
            self.http_retries.update(engine.http.stats.retries)
            self.download_bytes += engine.http.stats.bytes_down
        if engine.poller is not None:
            self.polls["retrieve"] += engine.poller.stats.retrieves
            self.polls["list"] += engine.poller.stats.lists


async def probe_key(settings: Settings) -> str:
    """"accepted", "refused" or "unknown": one cheap authenticated call (a batch that does not exist)."""
    async with HttpClient(headers_for(settings), PROBE_RETRY, timeout_s=30.0, secret=settings.api_key,
                          connections=2) as http:
        try:
            await make_provider(settings, http).get(PROBE_BATCH_ID)
        except errors.AuthRefused:
            return "refused"
        except errors.SpendLimited:
            return "spend_limited"
        except errors.FatalError:  # 404 and the like: past authentication
            return "accepted"
        except errors.TransientError as err:
            log.info("key check: no answer (%s); trying again later", http.redact(str(err)))
            return "unknown"
    return "accepted"


class JobRunner:
    """Moves each job through its states; the daemon decides when (its main loop) and how many at once.

    `flags` are the job options of the daemon's command line; `env` is the current reading of .env,
    and `env_generation` counts the readings (a run started on an older one used an older key).
    `wake` tells the daemon's main loop that a run or a key check has ended.
    """

    def __init__(self, flags: Mapping[str, Any], *, key_check_s: float, restart_waits_s: tuple[float, ...],
                 wake: Callable[[], None], observer: Observer | None = None, claims: Claims | None = None):
        self.flags = flags
        self.observer = observer  # every engine's HTTP latencies and batch timings (daemon.metrics)
        self.claims = claims or shared()  # whose batch is whose, shared by every job (see job.claims)
        self.key_check_s = key_check_s
        self.restart_waits_s = restart_waits_s
        self.rules = Rules(key_check_s, restart_waits_s)  # what a run's result makes of a job (job.outcome)
        self._wake = wake
        self.env: dict[str, str] = {}
        self.env_generation = 0
        self.slots = FairSlots(1)  # sized at startup, once the settings are known
        # what every job may have queued at each provider account: one budget, fair shares by requests or
        # tokens, work-conserving (a job with nothing to send leaves its share to the others)
        self.queues = QueuePool()
        self.totals = Totals()
        self.on_state: list[Callable[[Job, JobState], None]] = []  # (job, state before): e.g. daemon.hooks

    def new_env(self, env: dict[str, str]) -> None:
        """.env read again (SIGHUP): runs that start from now on use it."""
        self.env = env
        self.env_generation += 1

    # -- states ---------------------------------------------------------------------------------

    def set_state(self, job: Job, state: JobState, reason: str | None) -> None:
        before = job.state
        job.state, job.reason = state, reason
        job.version += 1
        try:
            write_summary(job.dir, job.fields())
        except OSError as err:
            log.error("job %s: cannot write %s: %s", job.name, SUMMARY_FILE, err, extra={"job": job.name})
        for hook in self.on_state:
            hook(job, before)

    def fail(self, job: Job, reason: str) -> None:
        reason = redact(reason)
        self.set_state(job, JobState.FAILED, reason)
        log.error("job %s: failed: %s", job.name, reason, extra={"job": job.name, "state": "failed"})

    def pause(self, job: Job, reason: str) -> None:
        now = time.monotonic()
        # a run that started before the last SIGHUP used an older key: try the new one at once
        job.next_key_check = now if job.env_generation != self.env_generation else now + self.key_check_s
        self.set_state(job, JobState.PAUSED, reason)
        log.warning("job %s: paused: %s", job.name, reason, extra={"job": job.name, "state": "paused"})

    def pause_for_room(self, job: Job, reason: str) -> None:
        job.resume_at = time.monotonic() + self.key_check_s
        self.set_state(job, JobState.PAUSED, reason)
        log.warning("job %s: paused: %s", job.name, job.reason, extra={"job": job.name, "state": "paused"})

    # -- settings -------------------------------------------------------------------------------

    def prepare(self, job: Job) -> Prepared:
        """Settings for the job's next run: command-line flags, then its options.json, over .env.

        Whatever the job's own options or directory make go wrong is a UsageError for that job, never an
        error of the daemon; a full disk is DiskFull (the job waits for room, it does not fail for it). A
        template in options.json is the template itself, never a file to read.
        """
        try:
            return self._prepare(job)
        except (errors.UsageError, errors.DiskFull):
            raise
        except Exception as err:  # noqa: BLE001 - the job's, not the daemon's: it fails that job only
            if (full := disk_full(err)) is not None:
                raise errors.DiskFull(full.disk_full) from None
            raise errors.UsageError(f"options: {type(err).__name__}: {redact(str(err))}") from None

    def _prepare(self, job: Job) -> Prepared:
        options = read_options(job.dir)
        flags = {**self.flags, **options, "progress": False}
        try:
            settings = build_settings(flags, self.env, template_file="template" not in options)
        except (TypeError, ValueError) as err:
            raise errors.UsageError(f"options: {err}") from None
        settings = self._keep_shaping(job, settings).replace(job_name=job.name)
        add_secret(settings.api_key)
        remembered = {k: v for k, v in flags.items() if k in REMEMBERED}
        return Prepared(settings, remembered, settings.concurrency if "concurrency" in options else None)

    @staticmethod
    def _keep_shaping(job: Job, settings: Settings) -> Settings:
        """A job that has started keeps the batch options it started with (the engine refuses others):
        a restart with other defaults, or an edited options.json, must not fail it."""
        path = os.path.join(job.dir, "ledger.db")
        if not os.path.exists(path):
            return settings
        ledger = open_ledger(path, readonly=True)
        try:
            was = ledger.read_meta().get("shaping") or {}
        finally:
            ledger.close()
        now = settings.shaping()
        changed = {k: v for k, v in was.items() if k in now and now[k] != v}
        if not changed:
            return settings
        log.warning("job %s: keeps the batch options it started with (%s)", job.name,
                    ", ".join(f"{k} {v!r}, not {now[k]!r}" for k, v in changed.items()), extra={"job": job.name})
        return settings.replace(**changed)

    # -- a run ----------------------------------------------------------------------------------

    async def run(self, job: Job) -> None:
        current_job.set(job.name)  # this task's context, inherited by every task the engine starts
        try:
            await self._run(job)
        finally:
            job.task = None
            self._wake()

    async def _run(self, job: Job) -> None:
        try:
            prepared = self.prepare(job)
        except errors.UsageError as err:
            self.fail(job, str(err))
            return
        except errors.DiskFull as err:
            self.no_room(job, err)
            return
        job.env_generation = self.env_generation
        if not prepared.settings.api_key:
            self.pause(job, f"{missing_key_message(prepared.settings)}; then send SIGHUP")
            return
        handle = self.slots.handle(job.name, prepared.cap)
        try:
            engine = Engine(prepared.settings, job.dir, [job.input], quiet=True, slots=handle,
                            remembered=prepared.remembered, observer=self.observer,
                            owner=f"batch-scheduler daemon (job {job.name})", claims=self.claims, queues=self.queues)
        except Exception as err:  # noqa: BLE001 - e.g. a price table that cannot be read: this job's failure
            handle.close()
            self.fail(job, str(err) if isinstance(err, errors.SchedulerError) else f"{type(err).__name__}: {err}")
            return
        job.engine = engine
        self.set_state(job, JobState.RUNNING, CANCELLING if job.cancel_requested else None)
        log.info("job %s: running", job.name, extra={"job": job.name, "state": "running"})
        try:
            result = await engine.run()
        except asyncio.CancelledError:
            self.set_state(job, JobState.QUEUED, "the daemon stopped; the job resumes where it was at the next start")
            raise
        except Exception as err:  # what the engine does not turn into a result, e.g. an unreadable input
            log.debug("job %s: engine error", job.name, exc_info=True)
            self.fail(job, f"{type(err).__name__}: {err}")
            return
        finally:
            handle.close()
            self.totals.add_engine(engine)
            job.engine = None
        self.settle(job, engine, result)

    def settle(self, job: Job, engine: Engine, result: JobResult) -> None:
        """The daemon's state for what a run returned (the table is job.outcome's; this only keeps it)."""
        history = History(job.restarts, job.cancel_requested or engine.cancelled)
        self.apply(job, next_state(result, history, self.rules, engine.settings), result)

    def apply(self, job: Job, t: Transition, result: JobResult) -> None:
        """Keep a transition: summary.json, and when the daemon looks at the job again."""
        extra = {"job": job.name, "state": t.state.value}
        job.restarts = t.restarts
        if t.state is NextState.DONE:
            self.set_state(job, JobState.DONE, None)
            log.info("job %s: done: %s", job.name, outcome_line(result.summary), extra=extra)
        elif t.cause is Cause.DISK_FULL:
            self.pause_for_room(job, t.reason or "")
        elif t.state is NextState.PAUSED:
            self.pause(job, t.reason or "")
        elif t.state is NextState.QUEUED:
            job.not_before = time.monotonic() + (t.wait_s or 0.0)
            self.set_state(job, JobState.QUEUED, t.reason)
            log.warning("job %s: %s", job.name, t.reason, extra=extra)
        elif t.state is NextState.CANCELLED:
            self.set_state(job, JobState.CANCELLED, t.reason)
            log.info("job %s: cancelled: %s", job.name, outcome_line(result.summary), extra=extra)
        else:
            self.fail(job, t.reason or result.message)

    def no_room(self, job: Job, err: errors.DiskFull) -> None:
        """The job's settings could not be read for want of room: as a run stopped by it, it waits."""
        result = disk_full(err)
        assert result is not None
        self.apply(job, next_state(result, History(job.restarts, job.cancel_requested), self.rules), result)

    # -- a paused job's key ---------------------------------------------------------------------

    async def check_key(self, job: Job) -> None:
        generation = self.env_generation
        try:
            try:
                settings = self.prepare(job).settings
            except errors.UsageError as err:
                self.fail(job, str(err))
                return
            except errors.DiskFull as err:
                self.no_room(job, err)
                return
            try:
                outcome = await probe_key(settings) if settings.api_key else "refused"
            except Exception as err:  # a check must never take the daemon down; it is tried again
                log.warning("job %s: key check failed: %s", job.name, redact(str(err)), extra={"job": job.name})
                outcome = "unknown"
            self.totals.key_checks[outcome] += 1
            if job.state is not JobState.PAUSED:
                return  # cancelled meanwhile
            if outcome == "accepted":
                log.info("job %s: the key is accepted; resuming", job.name, extra={"job": job.name})
                self.set_state(job, JobState.QUEUED, None)
            elif self.env_generation != generation:
                job.next_key_check = 0.0  # a SIGHUP came during the check: try the new .env at once
            else:
                job.next_key_check = time.monotonic() + self.key_check_s
                log.info("job %s: key check: %s; next in %g s", job.name, outcome, self.key_check_s,
                         extra={"job": job.name})
        finally:
            job.key_check = None
            self._wake()

    # -- cancel ---------------------------------------------------------------------------------

    async def cancel(self, job: Job) -> dict[str, Any]:
        """Cancel the job's batches at the provider (as `cancel DIR` does) and mark it cancelled."""
        job.cancel_requested = True
        cancelled, problems = 0, list[str]()
        has_ledger = await asyncio.to_thread(os.path.exists, os.path.join(job.dir, "ledger.db"))
        if has_ledger:
            cancelled, problems = await self._cancel_batches(job)
        if job.state in FINAL:
            pass  # it ended while the batches were being cancelled
        elif has_ledger and job.state in (JobState.RUNNING, JobState.QUEUED):
            self.set_state(job, job.state, CANCELLING)  # a run collects what the batches finished
        else:
            self.set_state(job, JobState.CANCELLED, "cancelled through the HTTP API")
        log.info("job %s: cancel requested through the HTTP API; %d batch(es) cancelled at the provider%s",
                 job.name, cancelled, f", {len(problems)} could not be" if problems else "", extra={"job": job.name})
        return {"name": job.name, "state": job.state.value, "reason": job.reason, "batches_cancelled": cancelled,
                "errors": problems}

    async def _cancel_batches(self, job: Job) -> tuple[int, list[str]]:
        try:
            settings = self.prepare(job).settings
        except (errors.UsageError, errors.DiskFull) as err:
            settings, problems = None, [str(err)]
        else:
            problems = []
        done = await cancel_batches(job.dir, settings, retry=PROBE_RETRY)
        return len(done.requested), problems + done.problems
