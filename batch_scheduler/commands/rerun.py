"""`batch-scheduler rerun DIR --where 'status=errored|invalid|max_tokens' [--params FILE]`: those rows again.

The library's `rerun` (job/api.py, view/rerun.py): a new job in DIR.rerun-N over the rows of DIR whose
latest answer --where picks, with DIR's options and --params merged over its params; the key and the
environment as for `run`. Its outcome is printed as `run` prints one; `export DIR` then shows each row's
latest answer.
"""

from __future__ import annotations

import argparse
import os
import sys

from batch_scheduler.commands.run import print_outcome
from batch_scheduler.core.options import BY_NAME, check_value
from batch_scheduler.job.api import rerun


def main(args: argparse.Namespace) -> int:
    params = check_value(BY_NAME["params"], args.params, "") if args.params else None
    result = rerun(args.dir, args.where, params)
    inputs = result.summary.get("inputs") or []
    if inputs:  # OUT.rerun-N/input.jsonl: the rows chosen
        print(f"rerun of {args.dir} in {os.path.dirname(inputs[0])}", file=sys.stderr)
    print_outcome(result, json_lines=getattr(args, "log_json", False))
    return result.exit_code
