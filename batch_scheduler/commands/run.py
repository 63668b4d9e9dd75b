"""`batch-scheduler run INPUT... --out DIR` and `resume DIR`: one job, until its input is done."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time

from batch_scheduler.core import errors
from batch_scheduler.core.errors import ExitCode
from batch_scheduler.core.ledger import Ledger
from batch_scheduler.core.loop import run_loop
from batch_scheduler.core.options import REMEMBERED, flags_of
from batch_scheduler.core.settings import Settings, load_environment
from batch_scheduler.daemon.metrics import Metrics, run_view
from batch_scheduler.job.dryrun import dry_run
from batch_scheduler.job.engine import Engine, JobResult
from batch_scheduler.job.reader import expand_inputs
from batch_scheduler.providers import build_settings, missing_key_message

RESUME_OVERRIDES = ("retry_cancelled", "concurrency")  # what `resume DIR` may change

log = logging.getLogger("batch_scheduler.run")


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
        inputs = expand_inputs(args.inputs)
        out = args.out
    flags["progress"] = sys.stderr.isatty()
    flags["verbose"] = args.verbose
    settings = build_settings(flags, env)
    return settings, out, inputs


def main(args: argparse.Namespace) -> int:
    env = load_environment()
    settings, out, inputs = job_settings(args, env)
    if settings.dry_run:
        return run_loop(dry_run(settings, inputs, out))
    if not settings.api_key:
        raise errors.UsageError(missing_key_message(settings))
    remembered = {k: v for k, v in flags_of(args).items() if k in REMEMBERED} if args.command == "run" else {}
    metrics_file = getattr(args, "metrics_file", None)
    metrics = Metrics() if metrics_file else None
    if metrics_file:
        check_writable_dir(metrics_file)
    engine = Engine(settings, out, inputs, progress_tty=settings.progress, remembered=remembered, observer=metrics)
    started = time.time()
    result: JobResult = run_loop(engine.run())
    print_outcome(result, json_lines=getattr(args, "log_json", False))
    if metrics is not None and metrics_file:
        try:
            metrics.write_textfile(metrics_file, run_view(engine, result, started))
        except OSError as err:  # the job's work is safe; say why the file is missing
            print(f"batch-scheduler: --metrics-file {metrics_file}: cannot write: {err.strerror or err}",
                  file=sys.stderr)
    return result.exit_code


def check_writable_dir(path: str) -> None:
    """Refuse at once a --metrics-file that could not be written at the end of a long run."""
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise errors.UsageError(f"--metrics-file {path}: no directory {folder}")
    if not os.access(folder, os.W_OK):
        raise errors.UsageError(f"--metrics-file {path}: the directory {folder} is not writable")


def outcome_line(result: JobResult) -> str:
    s = result.summary
    req = s.get("requests", {})
    res = s.get("results", {})
    return (f"{req.get('finished', 0):,} of {req.get('accepted', 0):,} requests finished "
            f"({res.get('succeeded', 0):,} succeeded, {res.get('errored', 0):,} errored, "
            f"{res.get('expired', 0):,} expired), {req.get('rejected', 0):,} rejected; "
            f"{s.get('throughput_rps') or 0:,.0f} req/s; cost ${s.get('cost_usd', 0):,.4f}")


def print_outcome(result: JobResult, *, json_lines: bool = False) -> None:
    """The run's outcome on stderr: two plain lines, or with --log-json one log record (nothing else on
    stderr is then not JSON)."""
    if json_lines:
        s = result.summary
        if result.exit_code == ExitCode.USAGE:
            log.error("%s", result.message, extra={"exit_code": int(result.exit_code)})
            return
        level = logging.INFO if result.exit_code == ExitCode.OK else logging.ERROR
        log.log(level, "%s%s", outcome_line(result), "" if result.exit_code == ExitCode.OK else f"; {result.message}",
                extra={"state": s.get("state"), "exit_code": int(result.exit_code), "requests": s.get("requests", {}),
                       "results": s.get("results", {}), "cost_usd": s.get("cost_usd")})
        return
    if result.exit_code == ExitCode.USAGE:  # refused before anything was sent: no counts worth a line
        print(f"batch-scheduler: {result.message}", file=sys.stderr)
        return
    print(outcome_line(result), file=sys.stderr)
    if result.exit_code != ExitCode.OK:
        print(f"batch-scheduler: {result.message}", file=sys.stderr)
