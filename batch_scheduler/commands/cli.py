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
from typing import Any

from batch_scheduler import __version__
from batch_scheduler.core import errors
from batch_scheduler.core.errors import ExitCode
from batch_scheduler.core.loop import run_loop
from batch_scheduler.core.settings import Settings, load_environment
from batch_scheduler.job.engine import Engine, JobResult
from batch_scheduler.providers import build_settings, missing_key_message

log = logging.getLogger("batch_scheduler")

# flags whose values are remembered in the ledger so that `resume DIR` needs none of them
REMEMBERED = ("provider", "base_url", "auth", "header", "anthropic_version", "model", "batch_size", "batch_bytes",
              "concurrency", "poll_min", "poll_max", "shards", "max_attempts", "max_cost", "template", "system",
              "max_tokens", "id_field", "prices", "http_timeout", "inline_create_path", "inline_status_path",
              "inline_results_path")


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


def add_job_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("provider")
    g.add_argument("--provider", choices=("anthropic", "openai", "inline"), help="default anthropic")
    g.add_argument("--base-url", help="API base URL (ANTHROPIC_BASE_URL / CLAUDE_BASE_URL / OPENAI_BASE_URL)")
    g.add_argument("--auth", choices=("x-api-key", "bearer"), help="how the key is sent (default x-api-key; "
                   "bearer for openai, inline and most proxies)")
    g.add_argument("--header", action="append", metavar="'Name: value'", help="extra header (repeatable)")
    g.add_argument("--anthropic-version", help="anthropic-version header (default 2023-06-01)")
    g.add_argument("--model", help="fills params.model where a request has none (CLAUDE_MODEL)")
    g.add_argument("--http-timeout", type=float, metavar="S", help="read timeout per call (default 300)")
    g.add_argument("--inline-create-path", help="inline proxy: create path (default /v1/batches)")
    g.add_argument("--inline-status-path", help="inline proxy: status path (default /v1/batches/{id})")
    g.add_argument("--inline-results-path", help="inline proxy: results path (default /v1/batches/{id}/results)")
    g = p.add_argument_group("batching")
    g.add_argument("--batch-size", type=int, metavar="N", help="requests per batch (default 10,000)")
    g.add_argument("--batch-bytes", metavar="SIZE", help="bytes per batch body (default 200MB)")
    g.add_argument("--concurrency", type=int, metavar="K", help="batches in flight at once (default 8)")
    g.add_argument("--poll-min", type=float, metavar="S", help="first poll interval (default 5)")
    g.add_argument("--poll-max", type=float, metavar="S", help="longest poll interval (default 60)")
    g.add_argument("--shards", type=int, metavar="S", help="result shard files (default 16)")
    g.add_argument("--max-attempts", type=int, metavar="N", help="attempts per request (default 3)")
    g = p.add_argument_group("input")
    g.add_argument("--strict", action="store_true", help="refuse the whole job if any line is bad")
    g.add_argument("--template", help="prompt template (string or file) with {field} placeholders, for rows")
    g.add_argument("--system", help="system prompt for templated rows")
    g.add_argument("--max-tokens", type=int, help="max_tokens for templated rows")
    g.add_argument("--id-field", help="row field that holds the custom_id (templated rows)")
    g = p.add_argument_group("cost")
    g.add_argument("--dry-run", action="store_true", help="validate and estimate cost; submit nothing")
    g.add_argument("--max-cost", type=float, metavar="USD", help="submit no new batch past this spend")
    g.add_argument("--prices", metavar="FILE", help="price table overriding the shipped one")
    g.add_argument("--retry-cancelled", action="store_true", help="submit cancelled requests again")


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


def flags_of(args: argparse.Namespace) -> dict[str, Any]:
    return {k: v for k, v in vars(args).items() if v is not None}


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
