"""`batch-scheduler` / `python -m batch_scheduler`: parse, set the process up, run one command.

This is the one place that changes the process: logging configuration, the umask, and (through
core.loop) the event loop and the garbage collector's thresholds. The library API does none of it.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence

from batch_scheduler.commands import cancel, daemon, run, simulate, status, submit
from batch_scheduler.commands.parser import build_parser
from batch_scheduler.core import errors
from batch_scheduler.core.errors import ExitCode

COMMANDS = {"run": run.main, "resume": run.main, "status": status.main, "cancel": cancel.main,
            "simulate": simulate.main, "daemon": daemon.main, "submit": submit.main}


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


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose, args.log_json)
    os.umask(0o077)  # files the job writes are its owner's only
    try:
        return COMMANDS[args.command](args)
    except (errors.UsageError, errors.JobMismatch) as err:
        print(f"batch-scheduler: {err}", file=sys.stderr)
        return ExitCode.USAGE
    except errors.SchedulerError as err:
        print(f"batch-scheduler: {err}", file=sys.stderr)
        return ExitCode.FAILED
    except KeyboardInterrupt:
        print("batch-scheduler: interrupted; run the same command again to resume", file=sys.stderr)
        return 130
