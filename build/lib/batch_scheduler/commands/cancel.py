"""`batch-scheduler cancel DIR`: cancel the job's batches in flight at the provider."""

from __future__ import annotations

import argparse

from batch_scheduler.core.settings import load_environment
from batch_scheduler.job.status import cancel_command


def main(args: argparse.Namespace) -> int:
    return cancel_command(args.dir, load_environment())
