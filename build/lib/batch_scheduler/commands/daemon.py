"""`batch-scheduler daemon --spool DIR`: run jobs dropped into a spool, forever (docs/daemon.md)."""

from __future__ import annotations

import argparse

from batch_scheduler.daemon.server import run as run_daemon


def main(args: argparse.Namespace) -> int:
    return run_daemon(args)
