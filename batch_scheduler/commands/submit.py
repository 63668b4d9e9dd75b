"""`batch-scheduler submit INPUT... --ledger URL --name NAME --out OUT [job options]`: queue a cluster job.

The job's inputs, output and options go into the ledger; any node (`daemon --ledger URL`) claims it.
Its API key is the nodes' (their .env or environment), never the submitter's: nothing secret is stored.
"""

from __future__ import annotations

import argparse
import os
import re
import sys

from batch_scheduler.cluster.queue import Queue
from batch_scheduler.core import errors
from batch_scheduler.core.errors import ExitCode
from batch_scheduler.core.options import JOB_OPTION_NAMES, flags_of
from batch_scheduler.job.input.reader import expand_inputs
from batch_scheduler.providers import build_settings
from batch_scheduler.state import pg
from batch_scheduler.state.objects import is_object_url

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def job_spec(args: argparse.Namespace) -> dict:
    if not NAME.fullmatch(args.name):
        raise errors.UsageError(f"--name {args.name!r}: letters, digits, '.', '_' and '-', at most 128")
    if getattr(args, "dry_run", False):
        raise errors.UsageError("--dry-run is for `run`; a submitted job is sent")
    inputs: list[str] = []
    for given in args.inputs:  # in the order given; globs of local paths expanded (each sorted)
        for path in [given] if is_object_url(given) else map(os.path.abspath, expand_inputs([given])):
            if path not in inputs:
                inputs.append(path)
    out = args.out if is_object_url(args.out) else os.path.abspath(args.out)
    options = {k: v for k, v in flags_of(args).items() if k in JOB_OPTION_NAMES - {"dry_run"}}
    try:
        build_settings(dict(options), {})  # bad options are refused here, not on every node
    except (TypeError, ValueError) as err:
        raise errors.UsageError(f"options: {err}") from None
    if not args.weight > 0:
        raise errors.UsageError(f"--weight {args.weight:g}: must be above 0")
    team = getattr(args, "team", None) or ""
    if team and not NAME.fullmatch(team):
        raise errors.UsageError(f"--team {team!r}: letters, digits, '.', '_' and '-', at most 128")
    return {"inputs": inputs, "out": out, "options": options, "weight": args.weight, "team": team}


def main(args: argparse.Namespace) -> int:
    url = pg.check_url(args.ledger)
    spec = job_spec(args)
    pg.ensure_schema(url)
    queue = Queue(url)
    try:
        queue.submit(args.name, spec)
    finally:
        queue.close()
    print(f"job {args.name}: queued in {pg.redacted(url)}; results will be in {spec['out']}", file=sys.stderr)
    return ExitCode.OK
