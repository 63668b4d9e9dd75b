"""`batch-scheduler simulate`: the simulator's own command (also `python -m batch_scheduler.simulator`)."""

from __future__ import annotations

import argparse

from batch_scheduler.simulator import run as run_simulator


def main(args: argparse.Namespace) -> int:
    return run_simulator(args)
