"""`batch-scheduler export DIR -o FILE [--format jsonl|csv|parquet] [--order input|shard]`, and of a bucket
output, `export s3://BUCKET/OUT -o FILE.jsonl` (its result lines in shard order: job/view/bucket.py)."""

from __future__ import annotations

import argparse
import os
import sys

from batch_scheduler.core import errors
from batch_scheduler.core.errors import ExitCode
from batch_scheduler.core.loop import run_loop, tune_gc
from batch_scheduler.job.view.bucket import export_objects
from batch_scheduler.job.view.export import FORMATS, SUFFIXES, export
from batch_scheduler.state.objects import is_object_url


def main(args: argparse.Namespace) -> int:
    fmt = args.format or SUFFIXES.get(os.path.splitext(args.output)[1].lower())
    if fmt is None:
        raise errors.UsageError(f"-o {args.output}: say which format with --format {{{','.join(FORMATS)}}} "
                                f"(or name the file .jsonl, .csv or .parquet)")
    if is_object_url(args.dir):
        args.order = args.order or "shard"
        done = run_loop(export_objects(args.dir, fmt, args.output, args.order))
    else:
        args.order = args.order or "input"
        tune_gc()  # the CLI's process: a row's dicts die young by the million (~13% of an export's time)
        done = export(args.dir, fmt, args.output, args.order)
    what = "result lines" if fmt == "jsonl" else "rows"
    parts = [f"{done.results:,} with a result"] + ([f"{done.rejected:,} rejected"] if fmt != "jsonl" else [])
    print(f"exported {done.rows:,} {what} ({', '.join(parts)}) to {args.output}, in {args.order} order",
          file=sys.stderr)
    if fmt == "jsonl" and done.rejected:
        print(f"{done.rejected:,} rejected request(s) have no result line: see {args.dir}/rejected.jsonl",
              file=sys.stderr)
    if done.pending is None:
        print("how many requests are still to come is not known: no run has read all of the input yet",
              file=sys.stderr)
    elif done.pending:
        print(f"{done.pending:,} request(s) have no final result yet and are not in the file: finish the job "
              f"(`batch-scheduler resume {args.dir}`) and export again", file=sys.stderr)
    return ExitCode.OK
