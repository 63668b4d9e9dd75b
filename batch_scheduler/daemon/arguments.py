"""The daemon's own flags, apart from what it runs, so that building the CLI's parser imports nothing else."""

from __future__ import annotations

import argparse

SECRET_ENV = "BATCH_WEBHOOK_SECRET"  # the webhook's HMAC key, from the environment or .env


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("daemon")
    g.add_argument("--spool", metavar="DIR", help="spool directory: DIR/inbox, DIR/jobs (or --ledger: a cluster node)")
    g.add_argument("--listen", default=None, metavar="HOST:PORT",
                   help="HTTP API address (default 127.0.0.1:8787; beyond loopback only with --token), or "
                        "unix:PATH for a unix socket (mode 0600)")
    g.add_argument("--token", help="bearer token the HTTP API requires (or BATCH_DAEMON_TOKEN in .env)")
    g.add_argument("--max-jobs", type=int, default=4, metavar="N", help="jobs running at once (default 4)")
    g.add_argument("--inbox-poll-s", type=float, default=0.5, metavar="S", help="inbox look interval (default 0.5)")
    g.add_argument("--key-check-s", type=float, default=60.0, metavar="S",
                   help="how often a paused job checks a refused key again (default 60)")
    n = p.add_argument_group("notifications")
    n.add_argument("--on-done", metavar="CMD",
                   help="shell command run when a job is done, failed or cancelled; BATCH_JOB_NAME, "
                        "BATCH_JOB_STATE and BATCH_JOB_SUMMARY (its summary.json) are in its environment")
    n.add_argument("--webhook", metavar="URL",
                   help=f"POST a JSON event when a job is done, failed, cancelled or paused, signed with "
                        f"HMAC-SHA256 under {SECRET_ENV} (environment or .env); retried, never holds a job")

