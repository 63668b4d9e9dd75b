"""`batch-scheduler daemon`: run every job dropped into a spool directory, and stay up.

    DIR/inbox/NAME.jsonl (.jsonl.gz, .csv)   a job arrives: renamed in (names starting with `.` are ignored)
    DIR/inbox/NAME.options.json              its options (renamed in first): the flags' names in snake_case
    DIR/jobs/NAME/                           a claimed job: input.*, options.json and what `run --out`
                                             writes (results/, rejected.jsonl, ledger.db, summary.json)

After uvicorn's server, the daemon is startup -> main loop -> shutdown:

    startup    lock the spool, read .env, listen (loopback, or any address with --token), take up
               every job that was queued, running or paused when the daemon last stopped
    main loop  claim arrivals, start queued jobs in arrival order (--max-jobs at once), check the
               key of paused jobs; the engines share one budget of batches in flight (FairSlots)
    shutdown   claim nothing more, cancel the engines (the ledger is consistent at any instant), wait
               up to STOP_DEADLINE_S, then exit anyway

Signals only flip state: SIGTERM / SIGINT ask for the shutdown (a second SIGINT stops the waiting),
SIGHUP asks for .env and the options to be read again (paused jobs check their key at once).

A job's state is the `state` field of its summary.json, which the daemon owns (written atomically):

    queued -> running -> done | failed | cancelled
                 |  \\-> queued (the daemon stopped, or a run stopped on an error: tried again later)
                 \\--> paused (the key was refused: checked every --key-check-s and at SIGHUP) -> queued
"""

from __future__ import annotations

import argparse
import asyncio
import contextvars
import enum
import fcntl
import hmac
import ipaddress
import logging
import os
import re
import signal
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from batch_scheduler.core import errors
from batch_scheduler.core.errors import ExitCode
from batch_scheduler.core.http import HttpClient
from batch_scheduler.core.ledger import ChunkState, Ledger
from batch_scheduler.core.logs import RedactFilter, add_secret, redact
from batch_scheduler.core.settings import RetryPolicy, Settings, load_environment
from batch_scheduler.daemon.metrics import CONTENT_TYPE, MetricsView, daemon_families, render
from batch_scheduler.job.engine import Engine, JobResult
from batch_scheduler.job.status import job_status
from batch_scheduler.providers import build_settings, headers_for, make_provider, missing_key_message

log = logging.getLogger("batch_scheduler.daemon")

STOP_DEADLINE_S = 8.0  # SIGTERM -> exit: under the 10 s promised, and systemd's TimeoutStopSec=15
HTTP_STOP_S = 1.0  # open API connections get this long once the jobs have stopped
INPUT_SUFFIXES = (".jsonl.gz", ".jsonl", ".csv")
OPTIONS_SUFFIX = ".options.json"
OPTIONS_FILE = "options.json"
SUMMARY_FILE = "summary.json"
CLAIM_SUFFIX = ".claim"  # jobs/.NAME.claim: a claim in progress (finished or undone at startup)
RESTART_WAITS_S = (5.0, 30.0, 120.0, 600.0)  # runs that stop on an error are tried again after these
PROBE_BATCH_ID = "msgbatch_daemon_key_check"  # no such batch: 404 means the key got through
PROBE_RETRY = RetryPolicy(attempts=3, deadline_s=20.0, initial_wait_s=0.5, max_wait_s=5.0)
CANCELLING = "cancel requested through the HTTP API; collecting what its batches finished"


DaemonExit = ExitCode  # the daemon's exit statuses are ExitCode's (FORCED is its own)


class JobState(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    PAUSED = "paused"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


FINAL = frozenset({JobState.DONE, JobState.FAILED, JobState.CANCELLED})


# -- one budget of batches in flight, shared fairly ------------------------------------------------

class FairSlots:
    """The daemon-wide budget of batches in flight (--concurrency), granted round-robin among jobs.

    Each job asks through its own handle (`handle(name)`, what its Engine gets as `slots=`). While
    nobody waits, a free slot goes to whoever asks. Once jobs wait, every freed slot goes to the next
    job in turn (turns in the order jobs started waiting), one slot a turn: a job with a thousand
    batches to send cannot starve one with two.
    """

    def __init__(self, capacity: int, *, on_grant: Callable[[str], None] | None = None):
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self.in_use = 0
        self._waiters: dict[str, deque[asyncio.Future[None]]] = {}
        self._turns: deque[str] = deque()  # jobs with waiters, next turn first
        self._on_grant = on_grant

    @property
    def waiting(self) -> int:
        return sum(len(q) for q in self._waiters.values())

    def handle(self, job: str, limit: int | None = None) -> JobSlots:
        return JobSlots(self, job, limit)

    async def _acquire(self, job: str) -> None:
        if self.in_use < self.capacity and not self._turns:
            self._grant(job)
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        queue = self._waiters.setdefault(job, deque())
        if not queue:
            self._turns.append(job)
        queue.append(fut)
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self._release()  # granted as it was cancelled: pass the slot on
            else:
                self._forget(job, fut)
            raise

    def _forget(self, job: str, fut: asyncio.Future[None]) -> None:
        queue = self._waiters.get(job)
        if queue is not None and fut in queue:
            queue.remove(fut)
            if not queue:
                del self._waiters[job]
                self._turns.remove(job)

    def _grant(self, job: str) -> None:
        self.in_use += 1
        if self._on_grant is not None:
            self._on_grant(job)

    def _release(self) -> None:
        if self.in_use <= 0:
            raise RuntimeError("FairSlots released more often than acquired")
        self.in_use -= 1
        while self.in_use < self.capacity and self._turns:
            job = self._turns.popleft()
            queue = self._waiters[job]
            fut = queue.popleft()
            if queue:
                self._turns.append(job)  # one slot a turn: back of the line
            else:
                del self._waiters[job]
            if fut.done():  # cancelled while waiting; its owner forgets it
                continue
            self._grant(job)
            fut.set_result(None)


class JobSlots:
    """One job's handle on the shared budget, optionally capped by the job's own `concurrency`."""

    def __init__(self, pool: FairSlots, job: str, limit: int | None = None):
        self._pool = pool
        self.job = job
        self._own = asyncio.Semaphore(limit) if limit else None
        self.held = 0

    async def acquire(self) -> None:
        if self._own is not None:
            await self._own.acquire()
        try:
            await self._pool._acquire(self.job)
        except BaseException:
            if self._own is not None:
                self._own.release()
            raise
        self.held += 1

    def release(self) -> None:
        if self.held <= 0:
            raise RuntimeError(f"job {self.job} released a slot it does not hold")
        self.held -= 1
        if self._own is not None:
            self._own.release()
        self._pool._release()

    def close(self) -> None:
        """The run is over: give back what it still holds (a stopped or refused run keeps its slots)."""
        while self.held:
            self.release()


# -- the spool on disk ------------------------------------------------------------------------------

def job_name(filename: str) -> str | None:
    """`big.jsonl.gz` -> `big`; None for anything that is not a job's input."""
    if filename.startswith("."):
        return None
    for suffix in INPUT_SUFFIXES:
        if filename.endswith(suffix) and len(filename) > len(suffix):
            return filename[: -len(suffix)]
    return None


def read_json(path: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            doc = orjson.loads(f.read())
    except (OSError, orjson.JSONDecodeError):
        return {}
    return doc if isinstance(doc, dict) else {}


def write_summary(job_dir: str, fields: Mapping[str, Any]) -> None:
    """Merge the daemon's fields into summary.json (the engine writes the rest), atomically."""
    path = os.path.join(job_dir, SUMMARY_FILE)
    doc = read_json(path)
    doc.update(fields)
    if fields.get("reason") is None:
        doc.pop("reason", None)
    tmp = path + ".daemon-tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(orjson.dumps(doc, option=orjson.OPT_INDENT_2))
    os.replace(tmp, path)


@dataclass(eq=False)
class Job:
    name: str
    dir: str
    input_name: str  # the input's file name inside dir (input.jsonl, input.jsonl.gz, input.csv)
    source: str  # the name it arrived under
    claimed_at: float  # epoch; arrival order
    state: JobState = JobState.QUEUED
    reason: str | None = None
    # while the daemon runs
    task: asyncio.Task | None = None
    engine: Engine | None = None
    key_check: asyncio.Task | None = None
    next_key_check: float = 0.0  # monotonic
    not_before: float = 0.0  # monotonic: a run that stopped on an error waits until then
    restarts: int = 0  # runs in a row that stopped on an error
    cancel_requested: bool = False
    env_generation: int = 0  # which reading of .env its last run started with
    version: int = 0  # changes with every state change (cache key)

    @property
    def input(self) -> str:
        return os.path.join(self.dir, self.input_name)

    def fields(self) -> dict[str, Any]:
        return {"job": self.name, "state": self.state.value, "reason": self.reason, "source": self.source,
                "input": self.input_name, "claimed_at": self.claimed_at, "updated_at": time.time()}


class Spool:
    def __init__(self, root: str):
        self.root = os.path.abspath(root)
        self.inbox = os.path.join(self.root, "inbox")
        self.jobs = os.path.join(self.root, "jobs")

    def ensure(self) -> None:
        for d in (self.root, self.inbox, self.jobs):
            os.makedirs(d, mode=0o700, exist_ok=True)

    def arrivals(self) -> list[str]:
        """Inputs waiting in the inbox, first arrived first (a rename sets ctime)."""
        found = []
        with os.scandir(self.inbox) as entries:
            for e in entries:
                if job_name(e.name) is None:
                    continue
                try:
                    if not e.is_file():
                        continue
                    found.append((e.stat().st_ctime_ns, e.name))
                except FileNotFoundError:
                    continue
        return [name for _, name in sorted(found)]

    def taken(self, name: str) -> bool:
        return any(os.path.lexists(os.path.join(self.jobs, n)) for n in (name, f".{name}{CLAIM_SUFFIX}"))

    def claim(self, filename: str, name: str) -> Job | None:
        """Move inbox/FILENAME (and its options) into jobs/NAME; None if it vanished meanwhile.

        Staged in jobs/.NAME.claim (summary first, then options, then input), renamed into place last,
        so that a crash at any point leaves something `recover` can finish or undo.
        """
        base = job_name(filename)
        assert base is not None
        suffix = filename[len(base):]
        stage = os.path.join(self.jobs, f".{name}{CLAIM_SUFFIX}")
        os.mkdir(stage, 0o700)
        job = Job(name, os.path.join(self.jobs, name), "input" + suffix, filename, time.time())
        write_summary(stage, job.fields())
        options = os.path.join(self.inbox, base + OPTIONS_SUFFIX)
        if os.path.exists(options):
            os.rename(options, os.path.join(stage, OPTIONS_FILE))
        try:
            os.rename(os.path.join(self.inbox, filename), os.path.join(stage, job.input_name))
        except FileNotFoundError:
            self._undo(stage)
            return None
        os.rename(stage, job.dir)
        return job

    def _undo(self, stage: str) -> None:
        source = read_json(os.path.join(stage, SUMMARY_FILE)).get("source")
        base = job_name(source) if isinstance(source, str) else None
        options = os.path.join(stage, OPTIONS_FILE)
        if base and os.path.exists(options):
            back = os.path.join(self.inbox, base + OPTIONS_SUFFIX)
            if not os.path.exists(back):
                os.rename(options, back)
        for leftover in os.listdir(stage):
            os.unlink(os.path.join(stage, leftover))
        os.rmdir(stage)

    def recover(self) -> list[Job]:
        """Every job in jobs/, after finishing (input moved) or undoing (not yet) interrupted claims."""
        for entry in sorted(os.listdir(self.jobs)):
            stage = os.path.join(self.jobs, entry)
            if not (entry.startswith(".") and entry.endswith(CLAIM_SUFFIX) and os.path.isdir(stage)):
                continue
            name = entry[1:-len(CLAIM_SUFFIX)]
            if any(f.startswith("input") for f in os.listdir(stage)) and not os.path.lexists(
                    os.path.join(self.jobs, name)):
                os.rename(stage, os.path.join(self.jobs, name))
                log.info("job %s: finished its interrupted claim", name, extra={"job": name})
            else:
                self._undo(stage)
                log.info("undid an interrupted claim (%s)", entry)
        jobs = []
        for entry in sorted(os.listdir(self.jobs)):
            path = os.path.join(self.jobs, entry)
            if entry.startswith(".") or not os.path.isdir(path):
                continue
            job = self._load(entry, path)
            if job is None:
                log.warning("jobs/%s: no input file in it; left alone", entry)
            else:
                jobs.append(job)
        return sorted(jobs, key=lambda j: (j.claimed_at, j.name))

    @staticmethod
    def _load(name: str, path: str) -> Job | None:
        doc = read_json(os.path.join(path, SUMMARY_FILE))
        input_name = doc.get("input")
        if not isinstance(input_name, str) or not os.path.exists(os.path.join(path, input_name)):
            names = sorted(f for f in os.listdir(path) if f.startswith("input") and job_name(f) == "input")
            if not names:
                return None
            input_name = names[0]
        try:
            state = JobState(doc.get("state"))
        except ValueError:  # the engine's own word ("incomplete"), or nothing yet: take it up again
            state = JobState.QUEUED
        claimed = doc.get("claimed_at")
        return Job(name, path, input_name, str(doc.get("source") or input_name),
                   float(claimed) if isinstance(claimed, int | float) else os.stat(path).st_ctime,
                   state=state, reason=doc.get("reason"))


# -- options, settings, the provider ----------------------------------------------------------------

def option_names() -> frozenset[str]:
    """The keys an options.json may hold: the job flags of `run`, in snake_case."""
    from batch_scheduler.core.options import add_job_options
    p = argparse.ArgumentParser(add_help=False)
    add_job_options(p)
    return frozenset(a.dest for a in p._actions) - {"dry_run"}


def read_options(job_dir: str) -> dict[str, Any]:
    path = os.path.join(job_dir, OPTIONS_FILE)
    if not os.path.exists(path):
        return {}
    try:
        with open(path, "rb") as f:
            doc = orjson.loads(f.read())
    except (OSError, orjson.JSONDecodeError) as err:
        raise errors.UsageError(f"options: cannot read {OPTIONS_FILE}: {err}") from None
    if not isinstance(doc, dict):
        raise errors.UsageError(f'options: expected a JSON object such as {{"model": "...", "batch_size": 500}}, '
                                f"got {type(doc).__name__}")
    unknown = sorted(set(doc) - option_names())
    if unknown:
        raise errors.UsageError(f"options: unknown option(s) {', '.join(unknown)}; use the names of the "
                                f"command-line flags in snake_case (e.g. batch_size)")
    if isinstance(doc.get("header"), str):
        doc["header"] = [doc["header"]]
    return {k: v for k, v in doc.items() if v is not None}


@dataclass
class Prepared:
    settings: Settings
    remembered: dict[str, Any]
    cap: int | None  # the job's own concurrency, within the shared budget


async def probe_key(settings: Settings) -> str:
    """"accepted", "refused" or "unknown": one cheap authenticated call (a batch that does not exist)."""
    async with HttpClient(headers_for(settings), PROBE_RETRY, timeout_s=30.0, secret=settings.api_key,
                          connections=2) as http:
        try:
            await make_provider(settings, http).get(PROBE_BATCH_ID)
        except errors.AuthRefused:
            return "refused"
        except errors.FatalError:  # 404 and the like: past authentication
            return "accepted"
        except errors.TransientError as err:
            log.info("key check: no answer (%s); trying again later", http.redact(str(err)))
            return "unknown"
    return "accepted"


def key_refused_reason(message: str, key_check_s: float) -> str:
    status = re.search(r"\(HTTP \d+\)", message)
    return (f"the API refused the key{' ' + status.group(0) if status else ''}: fix ANTHROPIC_API_KEY / "
            f"CLAUDE_API_KEY (or the provider's key) in .env and send SIGHUP; the key is checked again every "
            f"{key_check_s:g} s. Every batch in flight is kept in the ledger")


def outcome_line(summary: Mapping[str, Any]) -> str:
    req, res = summary.get("requests", {}), summary.get("results", {})
    return (f"{req.get('finished', 0):,} of {req.get('accepted', 0):,} requests finished "
            f"({res.get('succeeded', 0):,} succeeded, {res.get('errored', 0):,} errored, "
            f"{res.get('expired', 0):,} expired), {req.get('rejected', 0):,} rejected; "
            f"cost ${summary.get('cost_usd', 0):,.4f}")


# -- the daemon -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class DaemonConfig:
    spool: str
    listen: tuple[str, int] = ("127.0.0.1", 8787)
    token: str | None = None
    flags: Mapping[str, Any] = field(default_factory=dict)  # job options given on the command line
    max_jobs: int = 4
    inbox_poll_s: float = 0.5
    key_check_s: float = 60.0
    stop_deadline_s: float = STOP_DEADLINE_S
    restart_waits_s: tuple[float, ...] = RESTART_WAITS_S
    progress_every_s: float = 60.0
    install_signals: bool = False  # True in the real process; tests call handle_signal


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


def _hard_exit(code: int) -> None:  # pragma: no cover - only when a job ignores cancellation
    logging.shutdown()
    os._exit(code)


class Daemon:
    def __init__(self, config: DaemonConfig, *, load_env: Callable[[], dict[str, str]] = load_environment,
                 hard_exit: Callable[[int], None] = _hard_exit):
        self.config = config
        self.spool = Spool(config.spool)
        self._load_env = load_env
        self._hard_exit = hard_exit
        self.env: dict[str, str] = {}
        self.env_generation = 0
        self.jobs: dict[str, Job] = {}
        self.slots = FairSlots(1)
        self.totals = Totals()
        self.should_exit = False
        self.force_exit = False
        self.reload_requested = False
        self.started = asyncio.Event()
        self.url: str | None = None
        self.started_at = time.time()
        self.stop_took_s: float | None = None
        self._wake = asyncio.Event()
        self._tg: asyncio.TaskGroup | None = None
        self._runner: web.AppRunner | None = None
        self._lock_fd: int | None = None
        self._described: dict[str, tuple[int, dict[str, Any]]] = {}

    # -- signals only flip state ----------------------------------------------------------------

    def handle_signal(self, sig: int) -> None:
        if sig == signal.SIGHUP:
            self.reload_requested = True
        elif self.should_exit and sig == signal.SIGINT:
            self.force_exit = True
        else:
            self.should_exit = True
        self._wake.set()

    def _signals(self, install: bool) -> None:
        if not self.config.install_signals:
            return
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            if install:
                loop.add_signal_handler(sig, self.handle_signal, sig)
            else:
                loop.remove_signal_handler(sig)

    # -- startup -> main loop -> shutdown -------------------------------------------------------

    async def serve(self) -> int:
        try:
            self.startup()
            await self.start_http()
        except (errors.UsageError, OSError) as err:
            log.error("not starting: %s", err)
            self._unlock()
            return DaemonExit.USAGE
        self._signals(install=True)
        self.started.set()
        code = DaemonExit.OK
        try:
            async with asyncio.TaskGroup() as tg:
                self._tg = tg
                await self.main_loop()
                code = await self.shutdown()
        except Exception:  # a bug of ours: say so and exit FAILED (systemd restarts; jobs resume)
            log.critical("the daemon failed; every job resumes at the next start", exc_info=True)
            code = DaemonExit.FAILED
        finally:
            self._signals(install=False)
            await self.stop_http()
            self._unlock()
        return code

    def startup(self) -> None:
        try:
            self.spool.ensure()
        except OSError as err:
            raise errors.UsageError(f"--spool {self.config.spool}: {err}") from None
        self._lock()
        self.env = self._load_env()
        base = build_settings(dict(self.config.flags), self.env)
        add_secret(base.api_key)
        add_secret(self.config.token)
        self.slots = FairSlots(base.concurrency)
        for job in self.spool.recover():
            self.jobs[job.name] = job
            if job.state is JobState.RUNNING:
                self.set_state(job, JobState.QUEUED, None)
        counts = Counter(j.state.value for j in self.jobs.values())
        log.info("spool %s: %d job(s) found (%s); budget of %d batches in flight, %d job(s) at once",
                 self.spool.root, len(self.jobs), ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "none",
                 base.concurrency, self.config.max_jobs)

    async def main_loop(self) -> None:
        next_scan = 0.0
        next_progress = time.monotonic() + self.config.progress_every_s
        while not self.should_exit:
            self._wake.clear()
            now = time.monotonic()
            if self.reload_requested:
                self.reload()
            if now >= next_scan:
                self.claim_arrivals()
                next_scan = now + self.config.inbox_poll_s
            self.check_keys(now)
            self.start_jobs(now)
            if now >= next_progress:
                self.log_progress()
                next_progress = now + self.config.progress_every_s
            try:
                async with asyncio.timeout(max(0.0, next_scan - time.monotonic())):
                    await self._wake.wait()
            except TimeoutError:
                pass

    async def shutdown(self) -> int:
        t0 = time.monotonic()
        running = [j for j in self.jobs.values() if j.task is not None]
        tasks = {j.task for j in running} | {j.key_check for j in self.jobs.values() if j.key_check is not None}
        log.info("stopping: %d running job(s) stop now and resume at the next start", len(running))
        for t in tasks:
            assert t is not None
            t.cancel()
        pending = {t for t in tasks if t is not None}
        deadline = t0 + self.config.stop_deadline_s
        while pending and not self.force_exit and (left := deadline - time.monotonic()) > 0:
            _, pending = await asyncio.wait(pending, timeout=min(left, 0.25))
        self.stop_took_s = time.monotonic() - t0
        if pending:
            log.error("%d task(s) did not stop within %.1f s; exiting anyway (the ledger is safe at any instant)",
                      len(pending), self.stop_took_s)
            await self.stop_http()
            self._unlock()
            self._hard_exit(DaemonExit.FORCED)
            return DaemonExit.FORCED
        log.info("stopped in %.2f s", self.stop_took_s)
        return DaemonExit.OK

    # -- the main loop's steps ------------------------------------------------------------------

    def reload(self) -> None:
        self.reload_requested = False
        try:
            env = self._load_env()
        except Exception as err:  # a broken .env must not take the daemon down
            log.error("SIGHUP: cannot read .env (%s); keeping the settings in use", err)
            return
        self.env = env
        self.env_generation += 1
        paused = [j for j in self.jobs.values() if j.state is JobState.PAUSED]
        for job in paused:
            job.next_key_check = 0.0
        log.info("SIGHUP: .env and job options read again; %d paused job(s) check their key now", len(paused))

    def claim_arrivals(self) -> None:
        try:
            arrivals = self.spool.arrivals()
        except OSError as err:
            log.error("cannot read the inbox %s: %s", self.spool.inbox, err)
            return
        for filename in arrivals:
            base = job_name(filename)
            assert base is not None
            name, n = base, 1
            while name in self.jobs or self.spool.taken(name):
                n += 1
                name = f"{base}-{n}"
            try:
                job = self.spool.claim(filename, name)
            except OSError as err:
                log.error("cannot claim %s: %s", filename, err)
                continue
            if job is None:
                continue
            self.jobs[name] = job
            log.info("job %s: claimed %s, queued", name, filename, extra={"job": name, "state": "queued"})
            try:
                self.prepare(job)
            except errors.UsageError as err:
                self.fail(job, str(err))

    def start_jobs(self, now: float) -> None:
        assert self._tg is not None
        running = sum(1 for j in self.jobs.values() if j.task is not None)
        queued = sorted((j for j in self.jobs.values() if j.state is JobState.QUEUED and j.task is None
                         and j.not_before <= now), key=lambda j: (j.claimed_at, j.name))
        for job in queued[: max(0, self.config.max_jobs - running)]:
            job.task = self._tg.create_task(self.run_job(job), name=f"job {job.name}")

    def check_keys(self, now: float) -> None:
        assert self._tg is not None
        for job in self.jobs.values():
            if job.state is JobState.PAUSED and job.key_check is None and job.next_key_check <= now:
                job.key_check = self._tg.create_task(self.check_key(job), name=f"key check {job.name}")

    def log_progress(self) -> None:
        for job in self.jobs.values():
            if job.engine is not None:
                log.info("job %s: %s", job.name, job.engine.stats.line(), extra={"job": job.name})

    # -- one job --------------------------------------------------------------------------------

    def set_state(self, job: Job, state: JobState, reason: str | None) -> None:
        job.state, job.reason = state, reason
        job.version += 1
        try:
            write_summary(job.dir, job.fields())
        except OSError as err:
            log.error("job %s: cannot write %s: %s", job.name, SUMMARY_FILE, err, extra={"job": job.name})

    def fail(self, job: Job, reason: str) -> None:
        reason = redact(reason)
        self.set_state(job, JobState.FAILED, reason)
        log.error("job %s: failed: %s", job.name, reason, extra={"job": job.name, "state": "failed"})

    def pause(self, job: Job, reason: str) -> None:
        now = time.monotonic()
        # a run that started before the last SIGHUP used an older key: try the new one at once
        job.next_key_check = now if job.env_generation != self.env_generation else now + self.config.key_check_s
        self.set_state(job, JobState.PAUSED, reason)
        log.warning("job %s: paused: %s", job.name, reason, extra={"job": job.name, "state": "paused"})

    def prepare(self, job: Job) -> Prepared:
        """Settings for the job's next run: command-line flags, then its options.json, over .env."""
        options = read_options(job.dir)
        flags = {**self.config.flags, **options, "progress": False}
        try:
            settings = build_settings(flags, self.env)
        except (TypeError, ValueError) as err:
            raise errors.UsageError(f"options: {err}") from None
        settings = self._keep_shaping(job, settings)
        add_secret(settings.api_key)
        from batch_scheduler.core.options import REMEMBERED
        remembered = {k: v for k, v in flags.items() if k in REMEMBERED}
        return Prepared(settings, remembered, settings.concurrency if "concurrency" in options else None)

    @staticmethod
    def _keep_shaping(job: Job, settings: Settings) -> Settings:
        """A job that has started keeps the batch options it started with (the engine refuses others):
        a restart with other defaults, or an edited options.json, must not fail it."""
        path = os.path.join(job.dir, "ledger.db")
        if not os.path.exists(path):
            return settings
        ledger = Ledger(path, readonly=True)
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

    async def run_job(self, job: Job) -> None:
        current_job.set(job.name)  # this task's context, inherited by every task the engine starts
        try:
            await self._run_job(job)
        finally:
            job.task = None
            self._wake.set()

    async def _run_job(self, job: Job) -> None:
        try:
            prepared = self.prepare(job)
        except errors.UsageError as err:
            self.fail(job, str(err))
            return
        job.env_generation = self.env_generation
        if not prepared.settings.api_key:
            self.pause(job, f"{missing_key_message(prepared.settings)}; then send SIGHUP")
            return
        handle = self.slots.handle(job.name, prepared.cap)
        engine = Engine(prepared.settings, job.dir, [job.input], quiet=True, slots=handle,
                        remembered=prepared.remembered)
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
        """The daemon's state for what a run returned."""
        code, extra = result.exit_code, {"job": job.name}
        if code == ExitCode.OK:
            job.restarts = 0
            self.set_state(job, JobState.DONE, None)
            log.info("job %s: done: %s", job.name, outcome_line(result.summary), extra={**extra, "state": "done"})
        elif code == ExitCode.AUTH:
            job.restarts = 0
            self.pause(job, key_refused_reason(result.message, self.config.key_check_s))
        elif job.cancel_requested or engine.cancelled:
            self.set_state(job, JobState.CANCELLED, "cancelled; what its batches finished is in results/")
            log.info("job %s: cancelled: %s", job.name, outcome_line(result.summary),
                     extra={**extra, "state": "cancelled"})
        elif code == ExitCode.FAILED and result.retry and job.restarts < len(self.config.restart_waits_s):
            wait_s = self.config.restart_waits_s[job.restarts]
            job.restarts += 1
            job.not_before = time.monotonic() + wait_s
            reason = (f"{redact(result.message)} (trying again in {wait_s:g} s, "
                      f"{job.restarts} of {len(self.config.restart_waits_s)})")
            self.set_state(job, JobState.QUEUED, reason)
            log.warning("job %s: %s", job.name, reason, extra={**extra, "state": "queued"})
        else:
            self.fail(job, result.message)

    async def check_key(self, job: Job) -> None:
        generation = self.env_generation
        try:
            try:
                settings = self.prepare(job).settings
            except errors.UsageError as err:
                self.fail(job, str(err))
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
                job.next_key_check = time.monotonic() + self.config.key_check_s
                log.info("job %s: key check: %s; next in %g s", job.name, outcome, self.config.key_check_s,
                         extra={"job": job.name})
        finally:
            job.key_check = None
            self._wake.set()

    async def cancel(self, job: Job) -> dict[str, Any]:
        """Cancel the job's batches at the provider (as `cancel DIR` does) and mark it cancelled."""
        job.cancel_requested = True
        cancelled, problems = 0, []
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
        except errors.UsageError as err:
            settings, problems = None, [str(err)]
        else:
            problems = []
        ledger = await asyncio.to_thread(Ledger, os.path.join(job.dir, "ledger.db"))
        cancelled = 0
        try:
            await asyncio.to_thread(ledger.write_meta, {"cancelled": True})
            rows = await ledger.chunks_in(ChunkState.SUBMITTED)
            if rows and settings is not None and settings.api_key:
                async with HttpClient(headers_for(settings), PROBE_RETRY, secret=settings.api_key) as http:
                    provider = make_provider(settings, http)
                    for r in rows:
                        try:
                            await provider.cancel(r.batch_id or "")
                            cancelled += 1
                        except errors.ProviderError as err:
                            problems.append(f"{r.batch_id}: {http.redact(str(err))}")
                            if isinstance(err, errors.AuthRefused):
                                break
        finally:
            await asyncio.to_thread(ledger.close)
        return cancelled, problems

    # -- what the API shows ---------------------------------------------------------------------

    async def describe(self, job: Job) -> dict[str, Any]:
        """State, progress, batches in flight, spend and ETA of one job."""
        st, summary, result_bytes = await asyncio.to_thread(_read_job_files, job.dir)
        req, attempts = summary.get("requests", {}), summary.get("attempts", {})
        live = job.engine.stats if job.engine is not None else None
        rejects = getattr(job.engine, "rejects", None) if job.engine is not None else None
        st_req = st.get("requests", {}) if st else {}
        accepted = st_req.get("accepted")
        if accepted is None:
            accepted = live.accepted if live else req.get("accepted")
        doc: dict[str, Any] = {
            "name": job.name, "state": job.state.value, "reason": job.reason, "source": job.source,
            "claimed_at": job.claimed_at,
            "progress": {
                "read": live.lines_read if live else req.get("lines_read", 0),
                "submitted": attempts.get("requests_sent", 0) + (live.submitted if live else 0),
                "finished": st_req.get("finished", req.get("finished", 0)),
                "accepted": accepted,
                "rejected": rejects.count if rejects is not None else req.get("rejected", 0),
                "waiting_retry": st_req.get("waiting_retry", 0),
            },
            "batches_in_flight": len(st.get("batches_in_flight", [])) if st else 0,
            "results": st.get("results") if st else summary.get("results", {}),
            "tokens": st.get("tokens") if st else summary.get("tokens", {}),
            "spend_usd": st.get("cost_usd", 0.0) if st else summary.get("cost_usd", 0.0),
            "eta_s": st.get("eta_s") if st and job.state is JobState.RUNNING else None,
            "result_bytes": result_bytes,
        }
        return doc

    async def described(self, job: Job) -> dict[str, Any]:
        """`describe`, cached while the job does not run (nothing changes until its state does)."""
        cached = self._described.get(job.name)
        if job.engine is None and cached is not None and cached[0] == job.version:
            return cached[1]
        version = job.version
        doc = await self.describe(job)
        self._described[job.name] = (version, doc)
        return doc

    async def metrics_view(self) -> MetricsView:
        by_state = {s.value: 0 for s in JobState}
        requests: Counter = Counter()
        tokens: Counter = Counter()
        in_flight = result_bytes = 0
        spend = 0.0
        for job in list(self.jobs.values()):
            by_state[job.state.value] += 1
            doc = await self.described(job)
            for k, v in doc["progress"].items():
                requests[k] += v or 0
            for k, v in (doc["results"] or {}).items():
                requests[k] += v or 0
            tokens.update({k: v or 0 for k, v in (doc["tokens"] or {}).items()})
            in_flight += doc["batches_in_flight"]
            result_bytes += doc["result_bytes"]
            spend += doc["spend_usd"] or 0.0
        live = Totals(Counter(self.totals.http_calls), Counter(self.totals.http_retries), self.totals.download_bytes,
                      Counter(self.totals.polls), self.totals.key_checks)
        for job in self.jobs.values():
            if job.engine is not None:
                live.add_engine(job.engine)
        return MetricsView(
            start_time_s=self.started_at, jobs_by_state=by_state, requests_by_state=dict(requests),
            batches_in_flight=in_flight, slots_capacity=self.slots.capacity, slots_in_use=self.slots.in_use,
            slots_waiting=self.slots.waiting, http_calls=dict(live.http_calls), http_retries=dict(live.http_retries),
            http_download_bytes=live.download_bytes, poll_calls=dict(live.polls), result_bytes=result_bytes,
            tokens=dict(tokens), spend_usd=spend, key_checks=dict(live.key_checks))

    # -- HTTP -----------------------------------------------------------------------------------

    async def start_http(self) -> None:
        host, port = self.config.listen
        runner = web.AppRunner(Api(self, self.config.token).app(), access_log=None, shutdown_timeout=HTTP_STOP_S)
        await runner.setup()
        try:
            await web.TCPSite(runner, host, port).start()
        except OSError as err:
            await runner.cleanup()
            raise OSError(f"cannot listen on {host}:{port}: {err.strerror or err}") from None
        self._runner = runner
        bound = runner.addresses[0]
        shown = f"[{bound[0]}]" if ":" in bound[0] else bound[0]
        self.url = f"http://{shown}:{bound[1]}"
        log.info("listening on %s%s", self.url, " (bearer token required)" if self.config.token else "")

    async def stop_http(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    # -- one daemon per spool -------------------------------------------------------------------

    def _lock(self) -> None:
        path = os.path.join(self.spool.root, "daemon.lock")
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            other = os.read(fd, 32).decode(errors="replace").strip()
            os.close(fd)
            raise errors.UsageError(f"another daemon runs on the spool {self.spool.root} (pid {other or '?'})") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._lock_fd = fd

    def _unlock(self) -> None:
        fd, self._lock_fd = self._lock_fd, None
        if fd is not None:
            os.close(fd)


current_job: contextvars.ContextVar[str | None] = contextvars.ContextVar("current_job", default=None)


class JobContextFilter(logging.Filter):
    """Records logged inside a job's tasks (the engine's too) name the job: a `job` field, and a
    `[NAME]` prefix on lines from other modules than the daemon's."""

    def filter(self, record: logging.LogRecord) -> bool:
        name = current_job.get()
        if name is not None and not hasattr(record, "job"):
            record.job = name
            if record.name != log.name and isinstance(record.msg, str):
                record.msg = f"[{name.replace('%', '%%')}] {record.msg}"
        return True


def _read_job_files(job_dir: str) -> tuple[dict[str, Any] | None, dict[str, Any], int]:
    """(status.job_status or None, summary.json, bytes in result shards); runs off the loop."""
    st = None
    if os.path.exists(os.path.join(job_dir, "ledger.db")):
        try:
            st = job_status(job_dir)
        except Exception as err:  # noqa: BLE001 - a ledger being created; the next look sees it
            log.debug("%s: no status yet: %s", job_dir, err)
    results = os.path.join(job_dir, "results")
    size = 0
    if os.path.isdir(results):
        with os.scandir(results) as entries:
            size = sum(e.stat().st_size for e in entries if e.name.endswith(".jsonl"))
    return st, read_json(os.path.join(job_dir, SUMMARY_FILE)), size


# -- the HTTP API -----------------------------------------------------------------------------------

def _json(doc: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(doc), status=status, content_type="application/json")


class Api:
    """GET /healthz, /jobs, /jobs/NAME, /metrics; POST /jobs/NAME/cancel. With a token, every path
    but /healthz needs `Authorization: Bearer TOKEN`."""

    def __init__(self, daemon: Daemon, token: str | None):
        self.daemon = daemon
        self._token = token.encode() if token else None

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._auth])
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/jobs", self.list_jobs)
        app.router.add_get("/jobs/{name}", self.get_job)
        app.router.add_post("/jobs/{name}/cancel", self.cancel_job)
        app.router.add_get("/metrics", self.metrics)
        return app

    @web.middleware
    async def _auth(self, request: web.Request, handler: Callable) -> web.StreamResponse:
        if self._token is not None and request.path != "/healthz":
            scheme, _, given = request.headers.get("Authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), self._token):
                resp = _json({"error": "missing or wrong bearer token"}, 401)
                resp.headers["WWW-Authenticate"] = "Bearer"
                return resp
        return await handler(request)

    def _job(self, request: web.Request) -> Job:
        job = self.daemon.jobs.get(request.match_info["name"])
        if job is None:
            raise web.HTTPNotFound(text=orjson.dumps({"error": f"no job {request.match_info['name']!r}"}).decode(),
                                   content_type="application/json")
        return job

    async def healthz(self, request: web.Request) -> web.Response:
        d = self.daemon
        counts = Counter(j.state.value for j in d.jobs.values())
        return _json({"status": "stopping" if d.should_exit else "ok", "jobs": dict(counts),
                      "uptime_s": round(time.time() - d.started_at, 1)})

    async def list_jobs(self, request: web.Request) -> web.Response:
        jobs = sorted(self.daemon.jobs.values(), key=lambda j: (j.claimed_at, j.name))
        return _json({"jobs": [{"name": j.name, "state": j.state.value, "reason": j.reason, "source": j.source,
                                "claimed_at": j.claimed_at} for j in jobs]})

    async def get_job(self, request: web.Request) -> web.Response:
        return _json(await self.daemon.describe(self._job(request)))

    async def cancel_job(self, request: web.Request) -> web.Response:
        job = self._job(request)
        if job.state in FINAL:
            return _json({"error": f"job {job.name} is {job.state.value}: nothing to cancel"}, 409)
        return _json(await self.daemon.cancel(job), 202)

    async def metrics(self, request: web.Request) -> web.Response:
        text = render(daemon_families(await self.daemon.metrics_view()))
        return web.Response(text=text, headers={"Content-Type": CONTENT_TYPE})


# -- the command ------------------------------------------------------------------------------------

def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("daemon")
    g.add_argument("--spool", required=True, metavar="DIR", help="spool directory: DIR/inbox, DIR/jobs")
    g.add_argument("--listen", default="127.0.0.1:8787", metavar="HOST:PORT",
                   help="HTTP API address (default 127.0.0.1:8787; beyond loopback only with --token)")
    g.add_argument("--token", help="bearer token the HTTP API requires (or BATCH_DAEMON_TOKEN in .env)")
    g.add_argument("--log-json", action="store_true", help="log one JSON object per line")
    g.add_argument("--max-jobs", type=int, default=4, metavar="N", help="jobs running at once (default 4)")
    g.add_argument("--inbox-poll-s", type=float, default=0.5, metavar="S", help="inbox look interval (default 0.5)")
    g.add_argument("--key-check-s", type=float, default=60.0, metavar="S",
                   help="how often a paused job checks a refused key again (default 60)")


def parse_listen(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise errors.UsageError(f"--listen {text!r}: expected HOST:PORT, e.g. 127.0.0.1:8787 or [::1]:8787")
    return host.strip("[]"), int(port)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def config_from(args: argparse.Namespace, env: Mapping[str, str]) -> DaemonConfig:
    """The daemon's configuration from its flags; raises UsageError (exit 2) before anything starts."""
    from batch_scheduler.core.options import flags_of
    listen = parse_listen(args.listen)
    token = args.token or env.get("BATCH_DAEMON_TOKEN") or None
    if not is_loopback(listen[0]) and not token:
        raise errors.UsageError(f"--listen {args.listen}: not a loopback address, so the HTTP API needs --token "
                                f"(or BATCH_DAEMON_TOKEN in .env); refusing to start")
    if getattr(args, "dry_run", False):
        raise errors.UsageError("--dry-run is for `run`; the daemon sends what it is given")
    if args.max_jobs < 1 or args.inbox_poll_s <= 0 or args.key_check_s <= 0:
        raise errors.UsageError("--max-jobs must be at least 1, --inbox-poll-s and --key-check-s above 0")
    names = option_names()
    flags = {k: v for k, v in flags_of(args).items() if k in names}
    build_settings(flags, env)  # bad job flags stop the start, not every job
    return DaemonConfig(spool=args.spool, listen=listen, token=token, flags=flags, max_jobs=args.max_jobs,
                        inbox_poll_s=args.inbox_poll_s, key_check_s=args.key_check_s, install_signals=True)


def run(args: argparse.Namespace) -> int:
    from batch_scheduler.core.loop import run_loop
    for handler in logging.getLogger().handlers:
        handler.addFilter(JobContextFilter())
        handler.addFilter(RedactFilter())
    config = config_from(args, load_environment())
    add_secret(config.token)
    return int(run_loop(Daemon(config).serve()))
