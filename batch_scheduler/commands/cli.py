"""Command line: run, resume, status, cancel, simulate, daemon.

Exit status: 0 every accepted request reached a final result; 1 anything else (resumable);
2 usage errors; 3 the API refused the key.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from batch_scheduler import __version__
from batch_scheduler.core import errors
from batch_scheduler.core.errors import ExitCode
from batch_scheduler.core.loop import run_loop
from batch_scheduler.core.options import REMEMBERED, add_job_options, flags_of
from batch_scheduler.core.settings import Settings, load_environment
from batch_scheduler.job.engine import Engine, JobResult
from batch_scheduler.providers import build_settings, missing_key_message

log = logging.getLogger("batch_scheduler")


def setup_logging(verbose: bool, json_lines: bool = False) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if json_lines:
        from batch_scheduler.core.logs import JsonFormatter
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    logging.getLogger("aiohttp").setLevel(logging.WARNING)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="batch-scheduler", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    p.add_argument("--version", action="version", version=f"batch-scheduler {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser("run", help="run a job (resumes when --out already holds it)")
    r.add_argument("inputs", nargs="+", help="JSONL (.jsonl, .jsonl.gz, globs) or CSV/JSONL rows with --template")
    r.add_argument("--out", required=True, help="output directory")
    add_job_options(r)

    r = sub.add_parser("resume", help="resume the job in DIR with the options it was started with")
    r.add_argument("dir")
    r.add_argument("--retry-cancelled", action="store_true")
    r.add_argument("--concurrency", type=int)

    r = sub.add_parser("status", help="where the job in DIR stands (works while it runs)")
    r.add_argument("dir")
    r.add_argument("--json", action="store_true")

    r = sub.add_parser("cancel", help="cancel the job's batches in flight at the provider")
    r.add_argument("dir")

    r = sub.add_parser("simulate", help="serve the batch APIs on loopback, faults and all")
    from batch_scheduler.simulator import add_arguments
    add_arguments(r)

    r = sub.add_parser("daemon", help="run jobs dropped into a spool directory, forever")
    try:
        from batch_scheduler.daemon.server import add_arguments as add_daemon_arguments
    except ImportError:  # the daemon module is optional until it lands
        r.add_argument("--spool")
    else:
        add_daemon_arguments(r)
        add_job_options(r)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    setup_logging(args.verbose, getattr(args, "log_json", False))
    os.umask(0o077)  # files the job writes are its owner's only
    try:
        if args.command == "simulate":
            from batch_scheduler.simulator import run as run_simulator
            return run_simulator(args)
        if args.command == "daemon":
            from batch_scheduler.daemon.server import run as run_daemon
            return run_daemon(args)
        if args.command == "status":
            from batch_scheduler.job.status import status_command
            return status_command(args.dir, as_json=args.json)
        if args.command == "cancel":
            from batch_scheduler.job.status import cancel_command
            return cancel_command(args.dir, load_environment())
        return run_command(args)
    except (errors.UsageError, errors.JobMismatch) as err:
        print(f"batch-scheduler: {err}", file=sys.stderr)
        return ExitCode.USAGE
    except errors.SchedulerError as err:
        print(f"batch-scheduler: {err}", file=sys.stderr)
        return ExitCode.FAILED
    except KeyboardInterrupt:
        print("batch-scheduler: interrupted; run the same command again to resume", file=sys.stderr)
        return 130


def job_settings(args: argparse.Namespace, env: dict[str, str]) -> tuple[Settings, str, list[str]]:
    """Settings, output dir and inputs for run / resume (resume reads them back from the ledger)."""
    if args.command == "resume":
        from batch_scheduler.core.ledger import Ledger
        path = os.path.join(args.dir, "ledger.db")
        if not os.path.exists(path):
            raise errors.UsageError(f"{args.dir}: no job here (no ledger.db)")
        ledger = Ledger(path)
        meta = ledger.read_meta()
        ledger.close()
        flags = dict(meta.get("flags", {}))
        flags.update({k: v for k, v in flags_of(args).items() if k in ("retry_cancelled", "concurrency")})
        inputs = [p["path"] for p in meta["inputs"]]
        out = args.dir
    else:
        from batch_scheduler.job.reader import expand_inputs
        flags = flags_of(args)
        inputs = expand_inputs(args.inputs)
        out = args.out
    flags["progress"] = sys.stderr.isatty()
    flags["verbose"] = args.verbose
    settings = build_settings(flags, env)
    return settings, out, inputs


def run_command(args: argparse.Namespace) -> int:
    env = load_environment()
    settings, out, inputs = job_settings(args, env)
    if settings.dry_run:
        from batch_scheduler.job.dryrun import dry_run
        return run_loop(dry_run(settings, inputs, out))
    if not settings.api_key:
        raise errors.UsageError(missing_key_message(settings))
    remembered = {k: v for k, v in flags_of(args).items() if k in REMEMBERED} if args.command == "run" else {}
    engine = Engine(settings, out, inputs, progress_tty=settings.progress, remembered=remembered)
    result: JobResult = run_loop(engine.run())
    print_outcome(result)
    return result.exit_code


def print_outcome(result: JobResult) -> None:
    s = result.summary
    req = s.get("requests", {})
    res = s.get("results", {})
    line = (f"{req.get('finished', 0):,} of {req.get('accepted', 0):,} requests finished "
            f"({res.get('succeeded', 0):,} succeeded, {res.get('errored', 0):,} errored, "
            f"{res.get('expired', 0):,} expired), {req.get('rejected', 0):,} rejected; "
            f"{s.get('throughput_rps') or 0:,.0f} req/s; cost ${s.get('cost_usd', 0):,.4f}")
    if result.exit_code == ExitCode.OK:
        print(line, file=sys.stderr)
    else:
        print(line, file=sys.stderr)
        print(f"batch-scheduler: {result.message}", file=sys.stderr)
