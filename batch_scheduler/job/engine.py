"""The engine: one job from input files to sharded results, resumable at any instant.

`Engine(settings, out, inputs).run()` opens the job (`job.Job`: its identity, ledger, shards and
inputs), runs it once (`run.Run`: the producer, sender, poller and endings in one task group,
behind `admission`), and turns what happened into a `JobResult` and DIR/summary.json (`summary`).
The CLI's `run` and the daemon both use it, so a run and a daemon job behave alike.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import time
from collections.abc import Callable
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any, cast

from batch_scheduler.core import errors
from batch_scheduler.core.errors import ExitCode
from batch_scheduler.core.http import HttpClient
from batch_scheduler.core.settings import Settings
from batch_scheduler.job.admit.admission import Admission
from batch_scheduler.job.admit.queue_budget import QueuePool, account_of
from batch_scheduler.job.admit.queues import JobQueues
from batch_scheduler.job.collect.collector import Collector, Judge
from batch_scheduler.job.input.batcher import BODY_WRAPPER_BYTES, cut_chunks
from batch_scheduler.job.input.prefix import job_lane_of
from batch_scheduler.job.input.reader import span_blocks
from batch_scheduler.job.input.replay import Replay
from batch_scheduler.job.input.validate import Rejects, Validator
from batch_scheduler.job.job import Job
from batch_scheduler.job.money.budget import Budget, unpriced_message, unpriced_models
from batch_scheduler.job.money.estimate import measure, survey
from batch_scheduler.job.money.pricing import PriceTable
from batch_scheduler.job.observe import JobStats, Observer
from batch_scheduler.job.run import Run
from batch_scheduler.job.send.claims import Claims, host, machine_wide
from batch_scheduler.job.send.poller import Poller, PollStats
from batch_scheduler.job.send.realtime import Answered
from batch_scheduler.job.send.route import lanes_problem
from batch_scheduler.job.send.submitter import Submitter
from batch_scheduler.job.view.live import ProgressFn, progress_of, report_progress
from batch_scheduler.job.view.progress import show_progress
from batch_scheduler.job.view.summary import build_summary
from batch_scheduler.providers import headers_for, key_refused_message, make_provider, provider_class, spec_of
from batch_scheduler.providers.base import Provider
from batch_scheduler.state.identity import InputIdentity, changed_input, local_identities
from batch_scheduler.state.ledger.sqlite import RetryState, SqliteLedger

__all__ = ["Engine", "ExitCode", "JobResult"]

log = logging.getLogger("batch_scheduler.engine")


@dataclass
class JobResult:
    exit_code: int
    message: str
    summary: dict[str, Any] = field(default_factory=dict)
    retry: bool = False  # unfinished for a reason that may pass: running it again later may finish it
    http_status: int | None = None  # the HTTP status of a refusal (key refused), for the daemon
    busy: bool = False  # another process holds the job (a daemon tries again later)
    disk_full: str | None = None  # what could not be written for want of room (a daemon pauses the job)

    @property
    def ok(self) -> bool:
        """Every accepted request reached a final result (exit status 0)."""
        return self.exit_code == ExitCode.OK


class Engine:
    """One job, run once. While and after it runs, `stats`, `http`, `poller`, `rejects` and `cancelled`
    say what it did (the daemon's totals and job pages read them)."""

    def __init__(self, settings: Settings, out_dir: str, inputs: list[str], *,
                 provider_factory: Callable[[Settings, HttpClient], Provider] | None = None,
                 progress_tty: bool = False, quiet: bool = False, remembered: dict | None = None,
                 slots: Any = None, observer: Observer | None = None, owner: str = "batch-scheduler run",
                 claims: Claims | None = None, queues: QueuePool | None = None, store: Any = None,
                 lease: Any = None, judge: Judge | None = None, report: ProgressFn | None = None):
        self.settings = settings
        self.out_dir = out_dir
        self.inputs = inputs
        self._provider_factory = provider_factory or make_provider
        self._tty = progress_tty
        self._quiet = quiet
        self._remembered = remembered or {}
        self._shared_slots = slots  # an object with async acquire() and release(), shared by jobs (daemon)
        self.observer = observer or Observer()  # HTTP latencies and batch timings (metrics)
        self._owner = owner  # who holds the job's lock, as a process refused by it is told
        # whose batch is whose: shared by every job of the process, and on its own also with this machine's
        # other processes' jobs on the account (claims.py)
        self._claims = claims or machine_wide()
        self._on_host = self._claims.machine_wide
        self._where = os.path.abspath(out_dir)  # this job, as the claims know it
        self._pool = queues or QueuePool()  # the provider queues' budget, shared by jobs (daemon)
        self._store = store  # where the job's state lives (job.LocalStore(out_dir) when None; see job.py)
        self._lease = lease  # cluster: the claim a create call must have time left on (see submitter)
        self._judge = judge  # response_model=: each succeeded answer checked (view/structured.py)
        self._report = report  # progress=: a callable told the counters (view/live.py)
        self.stats = JobStats()
        self.prices = PriceTable.load(settings.prices_file)
        self.http: HttpClient | None = None
        self._job: Job | None = None
        self._admission: Admission | None = None
        self._run: Run | None = None
        self._strict_read = False  # --strict read everything before sending

    @property
    def poller(self) -> Poller | None:
        return self._run.poller if self._run is not None else None

    @property
    def rejects(self) -> Rejects | None:
        return self._job.rejects if self._job is not None else None

    @property
    def cancelled(self) -> bool:
        return self._admission is not None and self._admission.cancelled

    async def run(self) -> JobResult:
        started = time.time()
        if problem := lanes_problem(self.settings, provider_class(self.settings.provider).realtime_api, started):
            return JobResult(ExitCode.USAGE, problem)
        try:
            job = self._job = await Job.open(self.settings, self.out_dir, self.inputs, remembered=self._remembered,
                                             stats=self.stats, prices=self.prices, owner=self._owner,
                                             store=self._store)
        except (errors.JobMismatch, errors.UsageError) as err:  # another job's directory, or a damaged one
            return JobResult(ExitCode.USAGE, str(err))
        except errors.JobBusy as err:  # another process has the job: touch nothing
            return JobResult(ExitCode.USAGE, str(err), busy=True)
        except (errors.DiskFull, OSError) as err:
            if (full := disk_full(err)) is None:
                raise
            return full
        self.settings = job.settings  # what the job keeps of its own (its anthropic-version)
        try:
            if self._on_host and isinstance(job.ledger, SqliteLedger):  # what another process's lost create must
                # not take (a job directory's ledger, or a bucket output's in its state directory)
                await host().join_off_loop(self._where, account_of(self.settings), job.ledger.path)
            found = local_identities(self.inputs)  # checked at the end: an input edited meanwhile fails the run
            result = unchanged(await self._run_once(job), found)
        except asyncio.CancelledError:
            # stopped from outside (daemon shutdown): everything durable is in the ledger already
            job.close_files(read_all=self._read_all)
            self._write_summary(job, JobResult(ExitCode.FAILED, "stopped; resumes where it was"), started)
            job.close()
            raise
        except BaseException:  # an error not turned into a result (e.g. an unreadable input): close what we opened
            job.close_files(read_all=False)
            job.close()
            raise
        finally:
            self._claims.release(self._where)  # what it holds is in its ledger now, where others look
            if self._on_host:
                host().leave(self._where)
        refused = result.exit_code == ExitCode.USAGE  # e.g. the input changed: the job's files stay as they were
        job.close_files(read_all=self._read_all and not refused)
        try:
            if not refused:
                result.summary = self._write_summary(job, result, started)
                await job.store.publish(result.exit_code == ExitCode.OK)
        finally:
            job.close()
        return result

    @property
    def _read_all(self) -> bool:
        """Whether this run read every input line (so its list of rejected lines is the whole one)."""
        return self.stats.reading_done or self._strict_read

    async def _run_once(self, job: Job) -> JobResult:
        start = await job.start()
        queues = JobQueues(self._pool, self.settings, spec_of(self.settings.provider), job.ledger, self.stats,
                           job=self.out_dir, learned=job.ledger.read_queue_limits())
        try:
            return await self._run_with(job, start, queues)
        finally:
            queues.close()  # what the run still holds in a shared pool goes back (the next run holds it again)

    async def _run_with(self, job: Job, start: Any, queues: JobQueues) -> JobResult:
        s = self.settings
        slots = self._shared_slots or asyncio.Semaphore(s.concurrency)
        admission = self._admission = Admission(slots, Budget(s.max_cost_usd, self.prices, s.provider), job.ledger, self.stats,
                                                queues, cancelled=start.cancelled, spent_usd=start.spent_usd)
        async with HttpClient(headers_for(s), s.retry, timeout_s=s.http_timeout_s, secret=s.api_key,
                              connections=max(16, s.concurrency * 2)) as http:
            self.http = http
            http.on_retry.append(self._count_retry)
            http.on_call.append(self.observer.http_call)
            provider = self._provider_factory(s, http)
            try:
                await provider.preflight()
            except errors.UsageError as err:
                return JobResult(ExitCode.USAGE, str(err))
            except errors.ProviderError as err:
                return self._failure(err, http)
            if s.strict and (refused := await self._strict_pass(job, provider)):
                return refused
            if s.max_cost_usd is not None and (refused := await self._price_check(job, provider, admission.budget)):
                return refused
            replay = Replay(job.sources, provider.check_request, job.ledger, lane_of=job_lane_of(provider),
                            id_fields=provider.id_fields)
            submitter = Submitter(provider, job.ledger, job.rejects, overhead=provider.body_overhead,
                                  claims=self._claims, owner=self._where, lease=self._lease)
            answered = Answered(provider)  # the realtime lane's answers, collected as a batch's
            collector = Collector(cast(Provider, answered), job.ledger, job.shards, s, replay, self.prices.cost,
                                  realtime_cost=self.prices.realtime().cost, judge=self._judge)
            try:
                async with asyncio.TaskGroup() as tg:
                    run = self._run = Run(job, provider, replay, submitter, collector, admission, tg,
                                          pending_retries=start.pending_retries, observer=self.observer,
                                          answered=answered, batch_discount=self.prices.batch_discount)
                    progress = tg.create_task(show_progress(
                        self.stats, tty=self._tty, spent=lambda: admission.spent_usd,
                        max_cost_usd=s.max_cost_usd), name="progress") if not self._quiet else None
                    reports = tg.create_task(report_progress(
                        self.stats, self._report, lambda: admission.spent_usd, self.prices.batch_discount),
                        name="progress-report") if self._report is not None else None
                    try:
                        await run.go()
                    finally:
                        for task in (progress, reports):
                            if task:
                                task.cancel()
                        if self._report is not None:
                            self._report(progress_of(self.stats, admission.spent_usd, self.prices.batch_discount,
                                                     final=True))
            except BaseExceptionGroup as eg:
                return self._failure(first_error(eg), http)
            result = await self._final_result(job, admission)
            if result.exit_code == ExitCode.OK:
                try:
                    await provider.release_job(submitter.job_tag)  # what a killed run's releases missed
                except errors.SchedulerError as err:  # best effort: the job is done whatever stays staged
                    log.warning("staged objects of the job not all removed: %s", http.redact(str(err)))
        return result

    def _failure(self, err: BaseException, http: HttpClient) -> JobResult:
        """The one clear line for a run that stopped on an error; everything durable stays in the ledger."""
        if isinstance(err, errors.AuthRefused):
            status = getattr(err, "status", None)
            return JobResult(ExitCode.AUTH, auth_message(self.settings, status), http_status=status)
        if isinstance(err, errors.JobMismatch | errors.UsageError):  # UsageError: e.g. a job under the batch floor,
            return JobResult(ExitCode.USAGE, str(err))                  # AWS credentials or --staging missing
        if (full := disk_full(err)) is not None:
            return full
        if isinstance(err, errors.InputError):  # the input cannot be read on: running again cannot help
            return JobResult(ExitCode.FAILED, f"{err}; what was sent before it is kept")
        if isinstance(err, errors.SpendLimited):
            return JobResult(ExitCode.SPEND_LIMIT, spend_limit_message(http.redact(str(err))), http_status=err.status)
        if isinstance(err, errors.SchedulerError):
            return JobResult(ExitCode.FAILED, f"stopped: {http.redact(str(err))}. Nothing is lost: run the same "
                             f"command again to resume", retry=True)
        raise err

    async def _strict_pass(self, job: Job, provider: Provider) -> JobResult | None:
        """--strict: read everything first; any bad line refuses the whole job before anything is sent."""
        s, sources = self.settings, job.sources
        validator = Validator(provider, s.batch_bytes - BODY_WRAPPER_BYTES)
        async for _ in cut_chunks(span_blocks(sources, (0, 0, 1), None), validator, job.rejects,
                                  batch_size=s.batch_size, batch_bytes=s.batch_bytes,
                                  overhead=provider.body_overhead, unit_of=lambda fi: sources[fi].unit):
            pass
        self._strict_read = True
        if not job.rejects.count:
            return None
        job.rejects.report()
        return JobResult(ExitCode.FAILED, f"--strict: {job.rejects.count:,} bad line(s), listed in "
                         f"{self.out_dir}/rejected.jsonl; nothing was submitted")

    async def _price_check(self, job: Job, provider: Provider, budget: Budget) -> JobResult | None:
        """--max-cost fails closed: before the first create, every model of the accepted requests must have
        a price. One pass over the input (as --strict's) finds them, with the job's token estimate and a
        sample counted exactly (job.estimate); the ledger keeps both (meta `estimate`), so a resumed job
        reads nothing twice and checks the models again against the prices of this run."""
        s, sources = self.settings, job.sources
        found = (await asyncio.to_thread(job.ledger.read_meta)).get("estimate")
        if found is None:
            validator = Validator(provider, s.batch_bytes - BODY_WRAPPER_BYTES)
            chunks = cut_chunks(span_blocks(sources, (0, 0, 1), None), validator, Rejects(None, self.inputs),
                                batch_size=s.batch_size, batch_bytes=s.batch_bytes,
                                overhead=provider.body_overhead, unit_of=lambda fi: sources[fi].unit)
            async with aclosing(chunks):
                survey_ = await survey(chunks, provider.name, s.count_sample)
            # refused before any call, count_tokens included: nothing of an unpriced job leaves the machine
            if missing := unpriced_models(self.prices, survey_.by_model):
                return JobResult(ExitCode.USAGE, unpriced_message(missing))
            found = survey_.record(await measure(s, survey_.sample, survey_.requests))
            await asyncio.to_thread(job.ledger.write_meta, {"estimate": found})
        budget.ratio = found["measured"]["ratio"]
        missing = unpriced_models(self.prices, found["models"])
        return JobResult(ExitCode.USAGE, unpriced_message(missing)) if missing else None

    async def _final_result(self, job: Job, admission: Admission) -> JobResult:
        if self._run is not None and self._run.input_error is not None:
            return JobResult(ExitCode.FAILED, f"{self._run.input_error}; the requests before it were sent and "
                             f"their results collected")
        if self._run is not None and self._run.spend_limit:
            return JobResult(ExitCode.SPEND_LIMIT, f"{spend_limit_message(self._run.spend_limit)} "
                             f"({admission.held_back:,} request(s) not sent; every batch in flight was collected)")
        if admission.cancelled:
            return JobResult(ExitCode.FAILED, f"the job was cancelled; {admission.held_back:,} request(s) were not "
                             f"sent. Run again with --retry-cancelled to carry on")
        if admission.hold:
            return JobResult(ExitCode.FAILED, f"{admission.hold} ({admission.held_back:,} request(s) not sent)")
        ledger = job.ledger
        cancelled = await ledger.count_retries(RetryState.CANCELLED)
        pending = await ledger.count_retries(RetryState.PENDING)
        failed = await ledger.count_retries(RetryState.FAILED)
        if failed:
            return JobResult(ExitCode.FAILED, f"{failed:,} request(s) got no answer in any of their attempts (their "
                             f"batches failed as a whole, or their results left them out; `status` shows why); "
                             f"run the same command again to give them one more attempt", retry=True)
        if cancelled:
            return JobResult(ExitCode.FAILED, f"{cancelled:,} request(s) were cancelled; run again with "
                             f"--retry-cancelled to submit them")
        if pending:
            return JobResult(ExitCode.FAILED, f"{pending:,} request(s) still wait for another attempt; "
                             f"run the same command again", retry=True)
        return JobResult(ExitCode.OK, "done")

    def _count_retry(self, endpoint: str, attempt: int, err: BaseException, wait_s: float) -> None:
        self.stats.retries += 1
        log.debug("retry %s #%d in %.2fs: %s", endpoint, attempt, wait_s, err)

    def _write_summary(self, job: Job, result: JobResult, started: float) -> dict[str, Any]:
        try:
            return self._write_summary_file(job, result, started)
        except OSError as err:  # a full disk: the ledger holds everything the summary would say
            log.error("cannot write %s/summary.json (%s); `status` shows the job from its ledger", self.out_dir, err)
            return {}
        except (errors.LeaseLost, errors.LedgerUnavailable) as err:  # cluster: the job is another node's now
            log.warning("no summary written: %s", err)
            return {}

    def _write_summary_file(self, job: Job, result: JobResult, started: float) -> dict[str, Any]:
        run = self._run
        summary = build_summary(
            result.exit_code, result.message, cancelled=self.cancelled, settings=self.settings, inputs=self.inputs,
            stats=self.stats, rejected=job.rejects.count, counters=job.ledger.counters(),
            retries=job.ledger.retry_counts(), unknown_price_models=self.prices.unknown,
            wall_s=time.time() - started, http_calls=self.http.stats.calls if self.http is not None else {},
            downloads_restarted=run.collector.downloads_restarted if run is not None else 0,
            polls=run.poller.stats if run is not None else PollStats(),
            estimate=job.ledger.read_meta().get("estimate"),
            results_not_found=run.collector.results_not_found if run is not None else 0,
            queue=self._admission.queues.summary() if self._admission is not None else None)
        job.store.write_summary(summary)
        return summary


def unchanged(result: JobResult, found: list[InputIdentity]) -> JobResult:
    """The run's result, unless a local input changed while it ran (then refused: its answers may be of two
    versions of the input, so the job is not done, and its account stays as it was)."""
    if result.exit_code == ExitCode.USAGE or (message := changed_input(found)) is None:
        return result
    return JobResult(ExitCode.USAGE, message)


def disk_full(err: BaseException) -> JobResult | None:
    """The result of a run stopped for want of room to write (a full disk or quota, a file size limit)."""
    if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        what = f"no room left to write {err.filename or 'the job'} ({err.strerror})"
    elif isinstance(err, errors.DiskFull):
        what = str(err)
    else:
        return None
    return JobResult(ExitCode.FAILED, f"stopped: {what}: free some space, then run the same command again; "
                     f"nothing is lost", retry=True, disk_full=what)


def first_error(eg: BaseExceptionGroup) -> BaseException:
    """The first real error in a task group's exception group (cancellations are its echoes)."""
    for exc in eg.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            return first_error(exc)
        if not isinstance(exc, asyncio.CancelledError):
            return exc
    return eg.exceptions[0]


def spend_limit_message(provider_message: str) -> str:
    return (f"the provider's spend limit is reached: {provider_message}. Nothing is lost: run the same command "
            f"again once access resumes")


def auth_message(settings: Settings, status: int | None) -> str:
    return (f"{key_refused_message(settings, status)} and run the same command again; every batch in flight "
            f"is kept in the ledger and will be picked up")
