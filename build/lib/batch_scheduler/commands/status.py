"""`batch-scheduler status DIR [--json]`: where a job stands; read-only, works while it runs."""

from __future__ import annotations

import argparse

from batch_scheduler.job.status import status_command


def main(args: argparse.Namespace) -> int:
    return status_command(args.dir, as_json=args.json)
