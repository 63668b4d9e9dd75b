"""`batch-scheduler run INPUT... --out DIR` and `resume DIR`: one job, until its input is done."""

from __future__ import annotations

import argparse
import os
import sys

from batch_scheduler.cluster.store import BucketRunStore, state_dir_for
from batch_scheduler.core import errors
from batch_scheduler.core.errors import ExitCode
from batch_scheduler.core.ledger import Ledger
from batch_scheduler.core.loop import run_loop
from batch_scheduler.core.objects import is_object_url
from batch_scheduler.core.options import REMEMBERED, flags_of
from batch_scheduler.core.settings import Settings, load_environment
from batch_scheduler.job.dryrun import dry_run
from batch_scheduler.job.engine import Engine, JobResult
from batch_scheduler.job.reader import expand_inputs
from batch_scheduler.providers import build_settings, missing_key_message

RESUME_OVERRIDES = ("retry_cancelled", "concurrency")  # what `resume DIR` may change


def job_settings(args: argparse.Namespace, env: dict[str, str]) -> tuple[Settings, str, list[str]]:
    """Settings, output dir and inputs for run / resume (resume reads them back from the ledger)."""
    if args.command == "resume":
        path = os.path.join(args.dir, "ledger.db")
        if not os.path.exists(path):
            raise errors.UsageError(f"{args.dir}: no job here (no ledger.db)")
        ledger = Ledger(path)
        meta = ledger.read_meta()
        ledger.close()
        flags = dict(meta.get("flags", {}))
        flags.update({k: v for k, v in flags_of(args).items() if k in RESUME_OVERRIDES})
        inputs = [p["path"] for p in meta["inputs"]]
        out = args.dir
    else:
        flags = flags_of(args)
        inputs = [p for given in args.inputs for p in ([given] if is_object_url(given) else expand_inputs([given]))]
        out = args.out
    flags["progress"] = sys.stderr.isatty()
    flags["verbose"] = args.verbose
    settings = build_settings(flags, env)
    return settings, out, inputs


def main(args: argparse.Namespace) -> int:
    env = load_environment()
    settings, out, inputs = job_settings(args, env)
    store = None
    if is_object_url(out):  # results to a bucket; the ledger stays on this machine (docs/cluster.md)
        store = BucketRunStore(out, state_dir_for(out, env))
    try:
        if settings.dry_run:
            return run_loop(dry_run(settings, inputs, store.state_dir if store else out))
        if not settings.api_key:
            raise errors.UsageError(missing_key_message(settings))
        remembered = {k: v for k, v in flags_of(args).items() if k in REMEMBERED} if args.command == "run" else {}
        engine = Engine(settings, out, inputs, progress_tty=settings.progress, remembered=remembered, store=store)
        result: JobResult = run_loop(engine.run())
    finally:
        if store is not None:
            store.cleanup()
    print_outcome(result)
    return result.exit_code


def print_outcome(result: JobResult) -> None:
    s = result.summary
    req = s.get("requests", {})
    res = s.get("results", {})
    print(f"{req.get('finished', 0):,} of {req.get('accepted', 0):,} requests finished "
          f"({res.get('succeeded', 0):,} succeeded, {res.get('errored', 0):,} errored, "
          f"{res.get('expired', 0):,} expired), {req.get('rejected', 0):,} rejected; "
          f"{s.get('throughput_rps') or 0:,.0f} req/s; cost ${s.get('cost_usd', 0):,.4f}", file=sys.stderr)
    if result.exit_code != ExitCode.OK:
        print(f"batch-scheduler: {result.message}", file=sys.stderr)
