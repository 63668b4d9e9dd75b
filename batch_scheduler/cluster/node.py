"""`batch-scheduler daemon --ledger postgresql://...`: one of any number of identical nodes.

    startup    check the URL (exit 2 when it is not one), reach PostgreSQL (exit 1 when it cannot,
               naming host and port), make the schema once, register the node, listen (--listen)
    main loop  heartbeat; claim jobs (FOR UPDATE SKIP LOCKED, one node runs a job at a time) while
               fewer than --max-jobs run here and no live node runs fewer; each claimed job runs
               under its lease (runner.py, lease.py)
    shutdown   cancel the runs (the ledger is consistent at any instant), give the claims back
               (queued), exit

PostgreSQL lost mid-run: every run's next ledger transaction fails, so each job is dropped and
sends nothing new (its batches keep running at the provider); the main loop keeps trying to reach
the server every --poll-s, and once it answers gives the dropped claims back and claims again:
the runs resume from the ledger, as after a restart.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import signal
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from batch_scheduler.cluster.arguments import add_arguments  # noqa: F401 - the node's flags, re-exported
from batch_scheduler.cluster.lease import Lease
from batch_scheduler.cluster.places import allowed_roots
from batch_scheduler.cluster.queue import Claimed, Queue
from batch_scheduler.cluster.runner import JobRunner, Running
from batch_scheduler.core import errors
from batch_scheduler.core.errors import ExitCode
from batch_scheduler.core.loop import signal_handlers
from batch_scheduler.core.settings import load_environment
from batch_scheduler.job.outcome import RESTART_WAITS_S
from batch_scheduler.state.ledger import pg

log = logging.getLogger("batch_scheduler.cluster")

STOP_DEADLINE_S = 8.0


@dataclass(frozen=True)
class NodeConfig:
    url: str
    node_id: str = field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}")
    lease_s: float = 60.0
    listen: tuple[str, int] | None = None
    max_jobs: int = 4
    poll_s: float = 1.0
    flags: Mapping[str, Any] = field(default_factory=dict)
    key_check_s: float = 60.0
    restart_waits_s: tuple[float, ...] = RESTART_WAITS_S
    stop_deadline_s: float = STOP_DEADLINE_S
    install_signals: bool = False
    queue_limit: int | None = None  # requests queued per provider account, shared by every node
    allow_roots: tuple[str, ...] = ()  # local directories a job may read and write under (cluster.places)


class Node:
    def __init__(self, config: NodeConfig, *, load_env: Callable[[], dict[str, str]] = load_environment):
        self.config = config
        self.queue = Queue(config.url)
        self.runner = JobRunner(config.url, self.queue, flags=config.flags, env=load_env(),
                                lease_s=config.lease_s, key_check_s=config.key_check_s,
                                restart_waits_s=config.restart_waits_s, queue_limit=config.queue_limit,
                                allow_roots=allowed_roots(config.allow_roots))
        self.jobs: dict[str, Running] = {}
        self.connected = False
        self.should_exit = False
        self.started = asyncio.Event()
        self.url: str | None = None
        self._wake = asyncio.Event()
        self._tg: asyncio.TaskGroup | None = None
        self._http: web.AppRunner | None = None

    # -- signals only flip state ----------------------------------------------------------------

    def handle_signal(self, sig: int) -> None:
        self.should_exit = True
        self._wake.set()

    def _signals(self, install: bool) -> None:
        if not self.config.install_signals:
            return
        signal_handlers((signal.SIGINT, signal.SIGTERM), self.handle_signal, install=install)

    # -- startup -> main loop -> shutdown -------------------------------------------------------

    async def serve(self) -> int:
        c = self.config
        try:
            await asyncio.to_thread(pg.ensure_schema, c.url)
            await self.queue.register(c.node_id, f"{c.listen[0]}:{c.listen[1]}" if c.listen else None)
            if c.listen:
                await self._start_http(*c.listen)
        except errors.LedgerUnavailable as err:
            log.error("not starting: %s", err)
            await asyncio.to_thread(self.queue.close)
            return ExitCode.FAILED
        except OSError as err:
            log.error("not starting: --listen: %s", err)
            await asyncio.to_thread(self.queue.close)
            return ExitCode.USAGE
        self.connected = True
        log.info("node %s: PostgreSQL at %s; lease %g s, up to %d job(s) at once%s", c.node_id, pg.where(c.url),
                 c.lease_s, c.max_jobs, f"; listening on {self.url}" if self.url else "")
        self._signals(install=True)
        self.started.set()
        try:
            async with asyncio.TaskGroup() as tg:
                self._tg = tg
                await self.main_loop()
                await self.shutdown()
        finally:
            self._signals(install=False)
            if self._http is not None:
                await self._http.cleanup()
            await asyncio.to_thread(self.queue.close)
            await asyncio.to_thread(self.runner.turns.close)
        return ExitCode.OK

    async def main_loop(self) -> None:
        c = self.config
        while not self.should_exit:
            self._wake.clear()
            try:
                await self.tick()
            except errors.LedgerUnavailable as err:
                if self.connected:
                    log.error("lost PostgreSQL: %s; no new batch is sent, trying again every %g s", err, c.poll_s)
                self.connected = False
            try:
                async with asyncio.timeout(c.poll_s):
                    await self._wake.wait()
            except TimeoutError:
                pass

    async def tick(self) -> None:
        c = self.config
        await self.queue.heartbeat(c.node_id)
        if not self.connected:
            log.info("PostgreSQL at %s answers again; resuming", pg.where(c.url))
            self.connected = True
        await self.runner.give_back()
        while len(self.jobs) < c.max_jobs and not self.should_exit:
            sent = time.monotonic()  # the lease counts from before the claim reached the database
            claimed = await self.queue.claim(c.node_id, c.lease_s, running=len(self.jobs),
                                             live_s=max(2.0, 3 * c.poll_s))
            if claimed is None:
                return
            self._start(claimed, sent)

    def _start(self, claimed: Claimed, sent_at: float) -> None:
        assert self._tg is not None
        job: Running

        def lost(why: str) -> None:
            job.dropped = why
            if job.task is not None:
                job.task.cancel()

        lease = Lease(self.queue, claimed.job_id, claimed.token, claimed.name, self.config.lease_s,
                      create_deadline_s=self.config.lease_s / 2, on_lost=lost,
                      on_cancel=lambda: self.cancel_job(job), claimed_at=sent_at)
        job = Running(claimed, lease)
        self.jobs[claimed.name] = job
        job.task = self._tg.create_task(self._run(job), name=f"job {claimed.name}")

    def cancel_job(self, job: Running) -> None:
        """A renewal found `cancel --ledger` asked: the job's batches are cancelled beside its run (a claim
        lost meanwhile drops that job, never the node: runner.cancel_batches)."""
        if not job.claimed.cancel_requested:
            job.claimed.cancel_requested = True
            assert self._tg is not None
            self._tg.create_task(self.runner.cancel_batches(job), name=f"cancel {job.claimed.name}")

    async def _run(self, job: Running) -> None:
        try:
            await self.runner.run(job)
        finally:
            self.jobs.pop(job.claimed.name, None)
            self._wake.set()

    async def shutdown(self) -> None:
        jobs = list(self.jobs.values())
        log.info("stopping: %d job(s) stop now and are given back to the queue", len(jobs))
        tasks = [j.task for j in jobs if j.task is not None]
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=self.config.stop_deadline_s)
        for j in jobs:
            if j.dropped is None:
                try:
                    await self.queue.settle(j.claimed.job_id, j.claimed.token, "queued",
                                            "its node stopped; it resumes on the next node that claims it")
                except errors.LedgerUnavailable:
                    pass  # the lease runs out instead

    # -- the HTTP API ---------------------------------------------------------------------------

    async def _start_http(self, host: str, port: int) -> None:
        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        self._http = web.AppRunner(app, access_log=None)
        await self._http.setup()
        site = web.TCPSite(self._http, host, port)
        await site.start()
        sock = site._server.sockets[0]  # type: ignore[union-attr]
        bound = sock.getsockname()
        self.url = f"http://{host}:{bound[1]}"

    async def _healthz(self, request: web.Request) -> web.Response:
        doc = {"node": self.config.node_id, "postgres": "connected" if self.connected else "unreachable",
               "jobs": sorted(self.jobs)}
        return web.json_response(doc, status=200 if self.connected else 503)


# -- the command ------------------------------------------------------------------------------------


def config_from(args: Any, flags: Mapping[str, Any]) -> NodeConfig:
    """The node's configuration; UsageError (exit 2) before anything starts."""
    from batch_scheduler.core.address import parse_listen
    url = pg.check_url(args.ledger)
    for flag, value in (("--lease", args.lease), ("--poll-s", args.poll_s), ("--key-check-s", args.key_check_s)):
        if not math.isfinite(value) or value <= 0:
            raise errors.UsageError(f"{flag} {value:g}: must be a finite number of seconds above 0")
    hooks = [flag for flag, value in (("--on-done", args.on_done), ("--webhook", args.webhook)) if value]
    if hooks:
        raise errors.UsageError(f"{' and '.join(hooks)}: the spool daemon's notifications; a cluster node does not "
                                f"run them (follow `status --ledger URL` instead)")
    if args.lease <= 0 or args.poll_s <= 0 or args.max_jobs < 1:
        raise errors.UsageError("--lease and --poll-s must be above 0, --max-jobs at least 1")
    if args.queue_limit is not None and args.queue_limit < 1:
        raise errors.UsageError(f"--queue-limit {args.queue_limit}: must be at least 1")
    if args.poll_s * 3 > args.lease:
        raise errors.UsageError(f"--poll-s {args.poll_s:g} must be at most a third of --lease {args.lease:g}")
    changes: dict[str, Any] = {"lease_s": args.lease, "poll_s": args.poll_s, "max_jobs": args.max_jobs,
                               "flags": flags, "key_check_s": args.key_check_s, "install_signals": True,
                               "queue_limit": args.queue_limit, "allow_roots": tuple(args.allow_root or ())}
    if args.node_id:
        changes["node_id"] = args.node_id
    if args.listen:
        changes["listen"] = parse_listen(args.listen)
    return NodeConfig(url, **changes)


def run(args: Any) -> int:
    """`daemon --ledger URL`: the node until SIGTERM / SIGINT."""
    from batch_scheduler.core.logs import JobContextFilter, RedactFilter
    from batch_scheduler.core.loop import run_loop
    from batch_scheduler.core.options import JOB_OPTION_NAMES, flags_of
    from batch_scheduler.providers import build_settings
    for handler in logging.getLogger().handlers:
        handler.addFilter(JobContextFilter())
        handler.addFilter(RedactFilter())
    if getattr(args, "dry_run", False):
        raise errors.UsageError("--dry-run is for `run`; the daemon sends what it is given")
    flags = {k: v for k, v in flags_of(args).items() if k in JOB_OPTION_NAMES - {"dry_run"}}
    env = load_environment()
    build_settings(flags, env)  # bad job flags stop the start, not every job
    config = config_from(args, flags)
    return int(run_loop(Node(config, load_env=lambda: env).serve()))
