"""`batch-scheduler daemon --spool DIR` (one machine: docs/daemon.md) or `daemon --ledger URL` (one node of
a cluster: docs/cluster.md)."""

from __future__ import annotations

import argparse

from batch_scheduler.cluster.node import run as run_node
from batch_scheduler.core import errors
from batch_scheduler.daemon.server import run as run_daemon


def main(args: argparse.Namespace) -> int:
    if args.ledger and args.spool:
        raise errors.UsageError("daemon: --spool DIR (one machine) or --ledger URL (a cluster node), not both")
    if args.ledger:
        return run_node(args)
    if not args.spool:
        raise errors.UsageError("daemon: --spool DIR (one machine) or --ledger postgresql://USER@HOST:PORT/DB "
                                "(a cluster node) is required")
    return run_daemon(args)
