"""`batch-scheduler daemon`: run every job dropped into a spool directory, and stay up.

After uvicorn's server, the daemon is startup -> main loop -> shutdown:

    startup    lock the spool, read .env, listen (loopback, or any address with --token), take up
               every job that was queued, running or paused when the daemon last stopped
    main loop  claim arrivals, start queued jobs in arrival order (--max-jobs at once), check the
               key of paused jobs; the engines share one budget of batches in flight (FairSlots)
    shutdown   claim nothing more, cancel the engines (the ledger is consistent at any instant), wait
               up to STOP_DEADLINE_S, then exit anyway

Signals only flip state: SIGTERM / SIGINT ask for the shutdown (a second SIGINT stops the waiting),
SIGHUP asks for .env and the options to be read again (paused jobs check their key at once).

The pieces, each in its module: spool (the directory and each job's record), slots (the shared
budget), jobs (one job's runs, states and key checks), api (HTTP), metrics (/metrics), logs.
"""

from __future__ import annotations

import argparse
import asyncio
import fcntl
import logging
import os
import signal
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from batch_scheduler.core import errors
from batch_scheduler.core.address import parse_listen
from batch_scheduler.core.errors import ExitCode
from batch_scheduler.core.logs import RedactFilter, add_secret
from batch_scheduler.core.loop import signal_handlers
from batch_scheduler.core.options import JOB_OPTION_NAMES, flags_of
from batch_scheduler.core.settings import load_environment
from batch_scheduler.daemon.api import Api, is_loopback
from batch_scheduler.daemon.arguments import add_arguments  # noqa: F401 - the daemon's flags, re-exported
from batch_scheduler.daemon.hooks import SECRET_ENV, HookConfig, Hooks, check_webhook
from batch_scheduler.daemon.jobs import JobRunner, Totals
from batch_scheduler.daemon.logs import JobContextFilter, log
from batch_scheduler.daemon.metrics import Metrics
from batch_scheduler.daemon.notify import Notifier, watchdog_interval_s
from batch_scheduler.daemon.page import History
from batch_scheduler.daemon.slots import FairSlots
from batch_scheduler.daemon.spool import Job, JobState, Spool, job_name
from batch_scheduler.job.money.pricing import PriceTable
from batch_scheduler.job.outcome import RESTART_WAITS_S
from batch_scheduler.job.send.claims import machine_wide
from batch_scheduler.providers import build_settings

DEFAULT_LISTEN = "127.0.0.1:8787"
STOP_DEADLINE_S = 8.0  # SIGTERM -> exit: under the 10 s promised, and systemd's TimeoutStopSec=15
HOOKS_STOP_S = 2.0  # then notifications being delivered get this long


@dataclass(frozen=True)
class DaemonConfig:
    spool: str
    listen: tuple[str, int] = ("127.0.0.1", 8787)
    unix_socket: str | None = None  # `--listen unix:PATH`: the API on a unix socket instead
    token: str | None = None
    flags: Mapping[str, Any] = field(default_factory=dict)  # job options given on the command line
    max_jobs: int = 4
    inbox_poll_s: float = 0.5
    key_check_s: float = 60.0
    stop_deadline_s: float = STOP_DEADLINE_S
    restart_waits_s: tuple[float, ...] = RESTART_WAITS_S
    progress_every_s: float = 60.0
    install_signals: bool = False  # True in the real process; tests call handle_signal
    notify_socket: str | None = None  # $NOTIFY_SOCKET: systemd's Type=notify (daemon.notify)
    watchdog_s: float | None = None  # send WATCHDOG=1 this often (half of $WATCHDOG_USEC)
    hooks: HookConfig = field(default_factory=HookConfig)  # --on-done, --webhook
    history_every_s: float = 60.0  # a point of the status page's chart this often


def _hard_exit(code: int) -> None:  # pragma: no cover - only when a job ignores cancellation
    logging.shutdown()
    os._exit(code)


class Daemon:
    """The spool's jobs (`jobs`), run by a JobRunner, shown by the Api; `serve` is the whole life."""

    def __init__(self, config: DaemonConfig, *, load_env: Callable[[], dict[str, str]] = load_environment,
                 hard_exit: Callable[[int], None] = _hard_exit):
        self.config = config
        self.spool = Spool(config.spool)
        self._load_env = load_env
        self._hard_exit = hard_exit
        self.jobs: dict[str, Job] = {}
        self.should_exit = False
        self.force_exit = False
        self.reload_requested = False
        self.started = asyncio.Event()
        self.url: str | None = None
        self.started_at = time.time()
        self.stop_took_s: float | None = None
        self._wake = asyncio.Event()
        self._tg: asyncio.TaskGroup | None = None
        self._lock_fd: int | None = None
        self.metrics = Metrics()
        self.history = History(config.history_every_s)
        self._claim_errors: dict[str, str] = {}  # inbox file -> why its last claim failed (logged once)
        self.runner = JobRunner(config.flags, key_check_s=config.key_check_s,
                                restart_waits_s=config.restart_waits_s, wake=self._wake.set, observer=self.metrics,
                                claims=machine_wide(elsewhere=self.spool.batches_since))
        self.api = Api(self, config.token)
        self.notifier = Notifier(config.notify_socket)
        self.hooks = Hooks(config.hooks)
        self.runner.on_state.append(self.hooks.job_changed)
        self._status_sent: str | None = None

    @property
    def slots(self) -> FairSlots:
        return self.runner.slots

    @property
    def totals(self) -> Totals:
        return self.runner.totals

    @property
    def job_flags(self) -> Mapping[str, Any]:
        return self.config.flags

    async def cancel(self, job: Job) -> dict[str, Any]:
        return await self.runner.cancel(job)

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
        signal_handlers((signal.SIGINT, signal.SIGTERM, signal.SIGHUP), self.handle_signal, install=install)

    # -- startup -> main loop -> shutdown -------------------------------------------------------

    async def serve(self) -> int:
        try:
            self.startup()
            await self.start_http()
        except (errors.UsageError, OSError) as err:
            log.error("not starting: %s", err)
            self._unlock()
            return ExitCode.USAGE
        self._signals(install=True)
        await self.hooks.start()
        self.started.set()
        self.notifier.send("READY=1", f"STATUS={self.status_line()}")  # locked, and the port is bound
        self._status_sent = self.status_line()
        code: int = ExitCode.OK
        try:
            async with asyncio.TaskGroup() as tg:
                self._tg = tg
                await self.main_loop()
                code = await self.shutdown()
        except Exception:  # a bug of ours: say so and exit FAILED (systemd restarts; jobs resume)
            log.critical("the daemon failed; every job resumes at the next start", exc_info=True)
            code = ExitCode.FAILED
        finally:
            self._signals(install=False)
            left_s = self.config.stop_deadline_s - (self.stop_took_s or 0.0)
            await self.hooks.stop(min(HOOKS_STOP_S, max(0.1, left_s)))
            await self.api.stop()
            self._unlock()
            self.notifier.close()
        return code

    def startup(self) -> None:
        try:
            self.spool.ensure()
        except OSError as err:
            raise errors.UsageError(f"--spool {self.config.spool}: {err}") from None
        self._lock()
        self.runner.env = self._load_env()
        base = build_settings(dict(self.config.flags), self.runner.env)
        add_secret(base.api_key)
        add_secret(self.config.token)
        self.runner.slots = FairSlots(base.concurrency)
        for job in self.spool.recover():
            self.jobs[job.name] = job
            if job.state is JobState.RUNNING:
                self.runner.set_state(job, JobState.QUEUED, None)
        counts = Counter(j.state.value for j in self.jobs.values())
        log.info("spool %s: %d job(s) found (%s); budget of %d batches in flight, %d job(s) at once",
                 self.spool.root, len(self.jobs), ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "none",
                 base.concurrency, self.config.max_jobs)

    async def start_http(self) -> None:
        self.url = await self.api.start(*self.config.listen, unix=self.config.unix_socket)
        log.info("listening on %s%s", self.url, " (bearer token required)" if self.config.token else "")
        if (warning := listen_warning(self.config, self.url)) is not None:
            log.warning("%s", warning)

    async def main_loop(self) -> None:
        next_scan = 0.0
        next_progress = time.monotonic() + self.config.progress_every_s
        watchdog_s = self.config.watchdog_s
        next_watchdog = next_sample = 0.0
        while not self.should_exit:
            self._wake.clear()
            now = time.monotonic()
            if watchdog_s and now >= next_watchdog:
                self.notifier.send("WATCHDOG=1")  # from here: a loop that hangs stops sending it
                next_watchdog = now + watchdog_s
            if self.reload_requested:
                self.reload()
            if now >= next_scan:
                self.claim_arrivals()
                next_scan = now + self.config.inbox_poll_s
            self.check_keys(now)
            self.resume_paused(now)
            self.start_jobs(now)
            if now >= next_progress:
                self.log_progress()
                next_progress = now + self.config.progress_every_s
            self.send_status()
            if now >= next_sample:
                assert self._tg is not None
                self._tg.create_task(self.api.pages.sample(), name="history sample")
                next_sample = now + self.config.history_every_s
            wake_at = min(next_scan, next_watchdog) if watchdog_s else next_scan
            try:
                async with asyncio.timeout(max(0.0, wake_at - time.monotonic())):
                    await self._wake.wait()
            except TimeoutError:
                pass

    async def shutdown(self) -> int:
        t0 = time.monotonic()
        self.notifier.send("STOPPING=1", "STATUS=stopping: running jobs stop now and resume at the next start")
        running = sum(1 for j in self.jobs.values() if j.task is not None)
        pending = {t for j in self.jobs.values() for t in (j.task, j.key_check) if t is not None}
        log.info("stopping: %d running job(s) stop now and resume at the next start", running)
        for t in pending:
            t.cancel()
        deadline = t0 + self.config.stop_deadline_s
        while pending and not self.force_exit and (left := deadline - time.monotonic()) > 0:
            _, pending = await asyncio.wait(pending, timeout=min(left, 0.25))
        self.stop_took_s = time.monotonic() - t0
        if pending:
            log.error("%d task(s) did not stop within %.1f s; exiting anyway (the ledger is safe at any instant)",
                      len(pending), self.stop_took_s)
            await self.api.stop()
            self._unlock()
            self._hard_exit(ExitCode.FORCED)
            return ExitCode.FORCED
        log.info("stopped in %.2f s", self.stop_took_s)
        return ExitCode.OK

    # -- the main loop's steps ------------------------------------------------------------------

    def reload(self) -> None:
        self.reload_requested = False
        try:
            env = self._load_env()
        except Exception as err:  # a broken .env must not take the daemon down
            log.error("SIGHUP: cannot read .env (%s); keeping the settings in use", err)
            return
        self.runner.new_env(env)
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
            except OSError as err:  # a full disk, say: said once, tried again at every look, under the same name
                if self._claim_errors.get(filename) != str(err):
                    self._claim_errors[filename] = str(err)
                    log.error("cannot claim %s: %s; trying again at every look at the inbox", filename, err)
                continue
            self._claim_errors.pop(filename, None)
            if job is None:
                continue
            self.jobs[name] = job
            log.info("job %s: claimed %s, queued", name, filename, extra={"job": name, "state": "queued"})
            try:
                self.runner.prepare(job)
            except errors.UsageError as err:
                self.runner.fail(job, str(err))
            except errors.DiskFull:
                pass  # not the job's fault: its run meets it too, and waits for room

    def start_jobs(self, now: float) -> None:
        assert self._tg is not None
        running = sum(1 for j in self.jobs.values() if j.task is not None)
        queued = sorted((j for j in self.jobs.values() if j.state is JobState.QUEUED and j.task is None
                         and j.not_before <= now), key=lambda j: (j.claimed_at, j.name))
        for job in queued[: max(0, self.config.max_jobs - running)]:
            job.task = self._tg.create_task(self.runner.run(job), name=f"job {job.name}")

    def check_keys(self, now: float) -> None:
        assert self._tg is not None
        for job in self.jobs.values():
            if job.state is JobState.PAUSED and not job.resume_at and job.key_check is None \
                    and job.next_key_check <= now:
                job.key_check = self._tg.create_task(self.runner.check_key(job), name=f"key check {job.name}")

    def status_line(self) -> str:
        """The job counts, as systemctl status shows them: "2 running, 5 queued, 40 done"."""
        counts = Counter(j.state.value for j in self.jobs.values())
        shown = [f"{counts[s.value]} {s.value}" for s in JobState if counts[s.value]]
        return ", ".join(shown) if shown else "no jobs"

    def send_status(self) -> None:
        if self.notifier.address is None:
            return
        line = self.status_line()
        if line != self._status_sent:
            self._status_sent = line
            self.notifier.send(f"STATUS={line}")
    def resume_paused(self, now: float) -> None:
        """Jobs paused for want of disk space are queued again once their wait is over."""
        for job in self.jobs.values():
            if job.state is JobState.PAUSED and job.resume_at and job.resume_at <= now:
                job.resume_at = 0.0
                self.runner.set_state(job, JobState.QUEUED, None)

    def log_progress(self) -> None:
        for job in self.jobs.values():
            if job.engine is not None:
                log.info("job %s: %s", job.name, job.engine.stats.line(), extra={"job": job.name})

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


# -- the command ------------------------------------------------------------------------------------


def listen_warning(config: DaemonConfig, url: str) -> str | None:
    """What an operator must hear about where the API listens: beyond loopback it is plain HTTP."""
    if config.unix_socket is not None or is_loopback(config.listen[0]):
        return None
    return (f"the HTTP API on {url} is plain HTTP: the token and every answer cross the network in clear; put a "
            f"TLS proxy in front of it, or listen on loopback or a unix socket")


def config_from(args: argparse.Namespace, env: Mapping[str, str]) -> DaemonConfig:
    """The daemon's configuration from its flags; raises UsageError (exit 2) before anything starts."""
    text = args.listen or DEFAULT_LISTEN
    unix = os.path.abspath(text[len("unix:"):]) if text.startswith("unix:") else None
    listen = parse_listen(text) if unix is None else DaemonConfig.listen
    token = args.token or env.get("BATCH_DAEMON_TOKEN") or None
    if unix is None and not is_loopback(listen[0]) and not token:
        raise errors.UsageError(f"--listen {args.listen}: not a loopback address, so the HTTP API needs --token "
                                f"(or BATCH_DAEMON_TOKEN in .env); refusing to start")
    if getattr(args, "dry_run", False):
        raise errors.UsageError("--dry-run is for `run`; the daemon sends what it is given")
    if args.max_jobs < 1 or args.inbox_poll_s <= 0 or args.key_check_s <= 0:
        raise errors.UsageError("--max-jobs must be at least 1, --inbox-poll-s and --key-check-s above 0")
    names = JOB_OPTION_NAMES - {"dry_run"}  # refused above
    flags = {k: v for k, v in flags_of(args).items() if k in names}
    settings = build_settings(flags, env)  # bad job flags stop the start, not every job
    PriceTable.load(settings.prices_file)  # so does a price table that cannot be read
    secret = env.get(SECRET_ENV) or None
    check_webhook(args.webhook, secret)
    hooks = HookConfig(on_done=args.on_done or None, webhook=args.webhook, secret=secret, env=env)
    return DaemonConfig(spool=args.spool, listen=listen, unix_socket=unix, token=token, flags=flags,
                        max_jobs=args.max_jobs, inbox_poll_s=args.inbox_poll_s, key_check_s=args.key_check_s,
                        install_signals=True, notify_socket=env.get("NOTIFY_SOCKET") or None,
                        watchdog_s=watchdog_interval_s(env, os.getpid()), hooks=hooks)


def run(args: argparse.Namespace) -> int:
    from batch_scheduler.core.loop import run_loop
    for handler in logging.getLogger().handlers:
        handler.addFilter(JobContextFilter())
        handler.addFilter(RedactFilter())
    config = config_from(args, load_environment())
    add_secret(config.token)
    return int(run_loop(Daemon(config).serve()))
