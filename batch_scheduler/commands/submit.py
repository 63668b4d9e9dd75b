"""`batch-scheduler submit INPUT... --ledger URL --name NAME --out OUT [job options]`: queue a cluster job.

The job's inputs, output and options go into the ledger; any node (`daemon --ledger URL`) claims it.
Its API key is the nodes' (their .env or environment), never the submitter's: nothing secret is stored.
What decides where that key goes (base URL, auth, headers, provider, prices, ...) is the nodes' too:
such an option is refused here, as a node refuses a spec that carries one.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import sys

from batch_scheduler.cluster.queue import Queue
from batch_scheduler.core import errors
from batch_scheduler.core.errors import ExitCode
from batch_scheduler.core.options import JOB_OPTION_NAMES, SUBMITTED, flags_of, job_options
from batch_scheduler.job.input.reader import expand_inputs
from batch_scheduler.providers import build_settings
from batch_scheduler.state.ledger import pg
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
    options = submitted_options(args)
    if not (math.isfinite(args.weight) and args.weight > 0):
        raise errors.UsageError(f"--weight {args.weight:g}: must be a finite number above 0")
    team = getattr(args, "team", None) or ""
    if team and not NAME.fullmatch(team):
        raise errors.UsageError(f"--team {team!r}: letters, digits, '.', '_' and '-', at most 128")
    return {"inputs": inputs, "out": out, "options": options, "weight": args.weight, "team": team}


def submitted_options(args: argparse.Namespace) -> dict:
    """The job's options as a node will take them (`job_options`, the one trust rule): none of the nodes' own
    (where their key goes, which files they read: refused, exit 2), and a template or params file of the
    submitter's read here into its value, since a node reads no file a job names."""
    given = {k: v for k, v in flags_of(args).items() if k in JOB_OPTION_NAMES - {"dry_run"}}
    try:
        settings = build_settings(dict(given), {})  # bad options are refused here, not on every node
    except (TypeError, ValueError) as err:
        raise errors.UsageError(f"options: {err}") from None
    for name in ("template", "params"):
        if name in given:
            given[name] = getattr(settings, name)
    return job_options(given, "submit", door=SUBMITTED, flags=True)


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
