"""`batch-scheduler cancel DIR`: cancel the job's batches in flight at the provider."""

from __future__ import annotations

import argparse
import os
import sys

from batch_scheduler.cluster import pg
from batch_scheduler.cluster.queue import Queue
from batch_scheduler.core import errors
from batch_scheduler.core.errors import ExitCode
from batch_scheduler.core.ledger import Ledger
from batch_scheduler.core.loop import run_loop
from batch_scheduler.core.settings import load_environment
from batch_scheduler.job.cancel import cancel_batches
from batch_scheduler.providers import build_settings, missing_key_message


def main(args: argparse.Namespace) -> int:
    if args.ledger:
        return cluster_cancel(args)
    out_dir, env = args.dir, load_environment()
    path = os.path.join(out_dir, "ledger.db")
    if not os.path.exists(path):
        raise errors.UsageError(f"{out_dir}: no job here (no ledger.db)")
    ledger = Ledger(path, readonly=True)
    try:
        flags = dict(ledger.read_meta().get("flags", {}))
    finally:
        ledger.close()
    settings = build_settings(flags, env)
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
    print(f"cancelled {out_dir}: run `batch-scheduler run ... --out {out_dir}` (or `resume`) to collect what the "
          f"batches finished; cancelled requests are not sent again unless --retry-cancelled is given")
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
