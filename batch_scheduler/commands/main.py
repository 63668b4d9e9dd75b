"""`batch-scheduler` / `python -m batch_scheduler`: parse, set the process up, run one command.

This is the one place that changes the process: logging configuration, the umask, and (through
core.loop) the event loop and the garbage collector's thresholds. The library API does none of it.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
from collections.abc import Callable, Sequence

from batch_scheduler.commands.parser import build_parser
from batch_scheduler.core import errors
from batch_scheduler.core.errors import ExitCode
from batch_scheduler.job.view.progress import BarAwareHandler

# each command's module, imported when it runs (a `status` need not load the daemon or the cluster)
COMMANDS = {"run": "run", "resume": "run", "status": "status", "cancel": "cancel", "export": "export",
            "simulate": "simulate", "daemon": "daemon", "submit": "submit", "completion": "completion",
            "rerun": "rerun"}


def command(name: str) -> Callable[..., int]:
    return importlib.import_module(f"batch_scheduler.commands.{COMMANDS[name]}").main


def setup_logging(verbose: bool, json_lines: bool = False) -> None:
    handler = BarAwareHandler(sys.stderr)  # a log line while the progress bar is drawn goes above it
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
    say = _say_json if args.log_json else _say
    try:
        return command(args.command)(args)
    except (errors.UsageError, errors.JobMismatch, errors.JobBusy) as err:
        return say(str(err), ExitCode.USAGE)
    except errors.DiskFull as err:
        return say(f"{err}: free some space, then run the same command again; nothing is lost", ExitCode.FAILED)
    except errors.SchedulerError as err:
        return say(str(err), ExitCode.FAILED)
    except KeyboardInterrupt:
        return say("interrupted; run the same command again to resume", 130)


def _say(message: str, code: int) -> int:
    print(f"batch-scheduler: {message}", file=sys.stderr)
    return code


def _say_json(message: str, code: int) -> int:
    """With --log-json the last word is a log record too: every line on stderr is JSON."""
    logging.getLogger("batch_scheduler").error("%s", message, extra={"exit_code": int(code)})
    return code
