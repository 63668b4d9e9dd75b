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
import ipaddress
import logging
import os
import signal
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from batch_scheduler.core import errors
from batch_scheduler.core.errors import ExitCode
from batch_scheduler.core.logs import RedactFilter, add_secret
from batch_scheduler.core.options import JOB_OPTION_NAMES, flags_of
from batch_scheduler.core.settings import load_environment
from batch_scheduler.daemon.api import Api
from batch_scheduler.daemon.jobs import RESTART_WAITS_S, JobRunner, Totals
from batch_scheduler.daemon.logs import JobContextFilter, log
from batch_scheduler.daemon.slots import FairSlots
from batch_scheduler.daemon.spool import Job, JobState, Spool, job_name
from batch_scheduler.providers import build_settings

DEFAULT_LISTEN = "127.0.0.1:8787"
STOP_DEADLINE_S = 8.0  # SIGTERM -> exit: under the 10 s promised, and systemd's TimeoutStopSec=15


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
        self.runner = JobRunner(config.flags, key_check_s=config.key_check_s,
                                restart_waits_s=config.restart_waits_s, wake=self._wake.set)
        self.api = Api(self, config.token)

    @property
    def slots(self) -> FairSlots:
        return self.runner.slots

    @property
    def totals(self) -> Totals:
        return self.runner.totals

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
            return ExitCode.USAGE
        self._signals(install=True)
        self.started.set()
        code = ExitCode.OK
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
            await self.api.stop()
            self._unlock()
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
        self.url = await self.api.start(*self.config.listen)
        log.info("listening on %s%s", self.url, " (bearer token required)" if self.config.token else "")

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
            except OSError as err:
                log.error("cannot claim %s: %s", filename, err)
                continue
            if job is None:
                continue
            self.jobs[name] = job
            log.info("job %s: claimed %s, queued", name, filename, extra={"job": name, "state": "queued"})
            try:
                self.runner.prepare(job)
            except errors.UsageError as err:
                self.runner.fail(job, str(err))

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
            if job.state is JobState.PAUSED and job.key_check is None and job.next_key_check <= now:
                job.key_check = self._tg.create_task(self.runner.check_key(job), name=f"key check {job.name}")

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

def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("daemon")
    g.add_argument("--spool", metavar="DIR", help="spool directory: DIR/inbox, DIR/jobs (or --ledger: a cluster node)")
    g.add_argument("--listen", default=None, metavar="HOST:PORT",
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
    listen = parse_listen(args.listen or DEFAULT_LISTEN)
    token = args.token or env.get("BATCH_DAEMON_TOKEN") or None
    if not is_loopback(listen[0]) and not token:
        raise errors.UsageError(f"--listen {args.listen}: not a loopback address, so the HTTP API needs --token "
                                f"(or BATCH_DAEMON_TOKEN in .env); refusing to start")
    if getattr(args, "dry_run", False):
        raise errors.UsageError("--dry-run is for `run`; the daemon sends what it is given")
    if args.max_jobs < 1 or args.inbox_poll_s <= 0 or args.key_check_s <= 0:
        raise errors.UsageError("--max-jobs must be at least 1, --inbox-poll-s and --key-check-s above 0")
    names = JOB_OPTION_NAMES - {"dry_run"}  # refused above
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
