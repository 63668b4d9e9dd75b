"""`batch-scheduler cancel DIR`: cancel the job's batches in flight at the provider.

It takes the job's lock (`core.joblock`), so no run starts while it cancels. A run, resume or daemon
job that holds the job is the one thing it goes along with: cancelling is how such a run is told (the
mark in the ledger, which it reads before each batch); a second cancel is refused. The key goes to the
ledger's base URL only as `resume` lets it (`run.ledger_flags`).
"""

from __future__ import annotations

import argparse
import os
import sys

from batch_scheduler.cluster.queue import Queue
from batch_scheduler.commands.run import ledger_flags
from batch_scheduler.core import errors
from batch_scheduler.core.errors import ExitCode
from batch_scheduler.core.joblock import JobLock
from batch_scheduler.core.loop import run_loop
from batch_scheduler.core.options import flags_of
from batch_scheduler.core.settings import load_environment
from batch_scheduler.job.cancel import cancel_batches
from batch_scheduler.providers import build_settings, missing_key_message
from batch_scheduler.state.ledger import open_ledger, pg

OWNER = "batch-scheduler cancel"


def main(args: argparse.Namespace) -> int:
    if args.ledger:
        return cluster_cancel(args)
    out_dir, env = args.dir, load_environment()
    path = os.path.join(out_dir, "ledger.db")
    if not os.path.exists(path):
        raise errors.UsageError(f"{out_dir}: no job here (no ledger.db)")
    try:
        lock: JobLock | None = JobLock.take(out_dir, OWNER)
        running = None
    except errors.JobBusy as busy:
        if busy.owner == OWNER:
            raise
        lock, running = None, busy.holder  # a run holds the job: the mark in the ledger tells it
    try:
        return _cancel(args, path, env, running)
    finally:
        if lock is not None:
            lock.release()


def _cancel(args: argparse.Namespace, path: str, env: dict[str, str], running: str | None) -> int:
    out_dir = args.dir
    ledger = open_ledger(path, readonly=True)
    try:
        meta_flags = dict(ledger.read_meta().get("flags", {}))
    finally:
        ledger.close()
    given = {k: v for k, v in flags_of(args).items() if k in ("base_url", "header")}
    settings = build_settings(ledger_flags(out_dir, meta_flags, given, env, trust_url=args.trust_ledger_url), env)
    if not settings.api_key:
        raise errors.UsageError(missing_key_message(settings))
    done = run_loop(cancel_batches(out_dir, settings))
    for batch_id, status in done.requested:
        print(f"{batch_id}: cancel requested ({status})")
    for problem in done.problems[:-1] if done.refused else done.problems:
        print(problem, file=sys.stderr)
    if done.refused is not None:
        print(f"batch-scheduler: the API refused the key (HTTP {done.refused.status}); nothing was cancelled",
              file=sys.stderr)
        return ExitCode.AUTH
    if running:
        print(f"cancelled {out_dir}: {running} runs the job; it sends nothing new and collects what the "
              f"batches finished")
    else:
        print(f"cancelled {out_dir}: run `batch-scheduler run ... --out {out_dir}` (or `resume`) to collect what "
              f"the batches finished; cancelled requests are not sent again unless --retry-cancelled is given")
    return ExitCode.FAILED if done.problems else ExitCode.OK


def cluster_cancel(args: argparse.Namespace) -> int:
    """`cancel --ledger URL NAME`: the job sends nothing new; the node running it cancels its batches."""
    url = pg.check_url(args.ledger)
    pg.ensure_schema(url)
    queue = Queue(url)
    try:
        state = queue.cancel(args.dir)
    finally:
        queue.close()
    if state == "cancelled":
        print(f"job {args.dir}: cancelled")
    elif state in ("done", "failed"):
        print(f"job {args.dir}: already {state}; nothing to cancel")
    else:
        print(f"job {args.dir}: cancel requested; the node that runs it cancels its batches and collects what "
              f"they finished")
    return ExitCode.OK
