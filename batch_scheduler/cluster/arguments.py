"""A cluster node's flags (`daemon --ledger`), apart from the node, so that the CLI's parser imports nothing else."""

from __future__ import annotations

from typing import Any


def add_arguments(p: Any) -> None:
    g = p.add_argument_group("cluster (daemon --ledger; docs/cluster.md)")
    g.add_argument("--ledger", metavar="URL",
                   help="postgresql://USER@HOST:PORT/DB: run as one node of a cluster sharing this ledger")
    g.add_argument("--node-id", metavar="ID", help="this node's name in the ledger (default HOST-PID)")
    g.add_argument("--lease", type=float, default=60.0, metavar="S",
                   help="seconds a claim on a job lasts without renewal (default 60; renewed every third)")
    g.add_argument("--poll-s", type=float, default=1.0, metavar="S",
                   help="how often the node looks for jobs to claim (default 1)")
    g.add_argument("--allow-root", action="append", metavar="DIR",
                   help="a directory under which a job's local inputs and output may be (repeatable; default "
                        "none: object URLs only)")
    g.add_argument("--queue-limit", type=int, metavar="N",
                   help="requests queued at the provider per account, shared by every node and job (weighted "
                        "fair shares; default: none)")

