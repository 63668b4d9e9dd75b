"""The argument parser of `batch-scheduler`: every sub-command and its options.

Job options come from the one table in core.options; the daemon and the simulator add their own.
"""

from __future__ import annotations

import argparse
from typing import NoReturn

from batch_scheduler.cluster.arguments import add_arguments as add_node_arguments
from batch_scheduler.core.options import add_job_options
from batch_scheduler.core.version import __version__
from batch_scheduler.daemon.arguments import add_arguments as add_daemon_arguments
from batch_scheduler.job.money.models import did_you_mean
from batch_scheduler.simulator.cli import add_arguments as add_simulator_arguments

DESCRIPTION = """Push very large LLM workloads through provider batch APIs, exactly once.

Exit status: 0 every accepted request reached a final result; 1 anything else (resumable);
2 usage errors and refusals (another process holds the job, results its ledger does not know, an
input changed under the job); 3 the API refused the key; 5 the provider's spend limit is reached
(resumable); 129, 130, 143 stopped by SIGHUP, SIGINT, SIGTERM (resumable).
"""


class Parser(argparse.ArgumentParser):
    """argparse's parser, whose "unrecognized arguments" says the closest option names (of any command)."""

    def error(self, message: str) -> NoReturn:
        if message.startswith("unrecognized arguments: "):
            flags = [w.split("=")[0] for w in message.removeprefix("unrecognized arguments: ").split()
                     if w.startswith("--")]
            hints = [f"{flag}{did_you_mean(flag, self._option_names(), quote='')}" for flag in flags]
            hints = [h for h, flag in zip(hints, flags, strict=True) if h != flag]
            if hints:
                message += " (" + "; ".join(h.replace("; did you mean", ": did you mean") for h in hints) + ")"
        super().error(message)

    def _option_names(self) -> set[str]:
        names = {o for action in self._actions for o in action.option_strings if o.startswith("--")}
        for action in self._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub in action.choices.values():
                    names |= sub._option_names() if isinstance(sub, Parser) else set()
        return names


def _common(p: argparse.ArgumentParser, *, top: bool) -> None:
    """Options every sub-command takes, before or after its name (`-v run ...` or `run -v ...`): a
    sub-command's default is SUPPRESS, so a flag given before the name is not reset by it."""
    default = False if top else argparse.SUPPRESS
    p.add_argument("-v", "--verbose", action="store_true", default=default, help="debug logging")
    p.add_argument("--log-json", action="store_true", default=default,
                   help="log one JSON object per line (for journald, Loki, ...)")


def _run_only(p: argparse.ArgumentParser) -> None:
    """Flags of one run that are no job option: the ledger does not remember them, the daemon has /metrics."""
    g = p.add_argument_group("this run")
    g.add_argument("--metrics-file", metavar="PATH",
                   help="at the end, write Prometheus metrics (text format) to PATH, e.g. for node_exporter's "
                        "textfile collector")


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="batch-scheduler", description=DESCRIPTION,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    _common(p, top=True)
    p.add_argument("--version", action="version", version=f"batch-scheduler {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    r = sub.add_parser("run", help="run a job (resumes when --out already holds it)")
    r.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="JSONL requests (.jsonl, .jsonl.gz, globs), or CSV/JSONL rows with --template")
    r.add_argument("--out", required=True, metavar="DIR", help="output directory (the job's home)")
    add_job_options(r)
    _run_only(r)
    _common(r, top=False)

    r = sub.add_parser("resume", help="resume the job in DIR with the options it was started with")
    r.add_argument("dir", metavar="DIR", help="the job's output directory (or its bucket output, s3://..., gs://..., "
                                              "az://...: jsonl in shard order)")
    add_job_options(r, only=("retry_cancelled", "concurrency", "base_url", "header"))
    _trust_ledger_url(r)
    _run_only(r)
    _common(r, top=False)

    r = sub.add_parser("submit", help="queue a job in a cluster's ledger (docs/cluster.md)")
    r.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="input files every node can read (paths on a shared filesystem, or s3://, gs://, az:// URLs)")
    r.add_argument("--ledger", required=True, metavar="URL", help="postgresql://USER@HOST:PORT/DB")
    r.add_argument("--name", required=True, metavar="NAME", help="the job's name in the cluster (unique)")
    r.add_argument("--out", required=True, metavar="OUT",
                   help="where results go: s3://bucket/prefix (gs://, az://) or a directory every node shares")
    r.add_argument("--weight", type=float, default=1.0, metavar="W",
                   help="the job's weight among its team's jobs in the shared queue (daemon --queue-limit; default 1)")
    r.add_argument("--team", metavar="NAME",
                   help="the team the job counts for: teams share the queue equally, then their jobs by --weight")
    add_job_options(r, only=_daemon_job_options())
    _common(r, top=False)

    r = sub.add_parser("status", help="where the job in DIR stands (works while it runs)")
    r.add_argument("dir", metavar="DIR", nargs="?",
                   help="the job's output directory (with --ledger: a job's name; every job when left out)")
    r.add_argument("--ledger", metavar="URL", help="a cluster's ledger: postgresql://USER@HOST:PORT/DB")
    r.add_argument("--json", action="store_true", help="print the status as one JSON document")
    _common(r, top=False)

    r = sub.add_parser("cancel", help="cancel the job's batches in flight at the provider")
    r.add_argument("dir", metavar="DIR", help="the job's output directory (with --ledger: the job's name)")
    r.add_argument("--ledger", metavar="URL", help="a cluster's ledger: postgresql://USER@HOST:PORT/DB")
    add_job_options(r, only=("base_url", "header"))
    _trust_ledger_url(r)
    _common(r, top=False)

    r = sub.add_parser("export", help="the job in DIR as one table: a row per input request, in input order")
    r.add_argument("dir", metavar="DIR", help="the job's output directory (or its bucket output, s3://..., gs://..., "
                                              "az://...: jsonl in shard order)")
    r.add_argument("-o", "--output", required=True, metavar="FILE", help="the file to write (replaced whole)")
    r.add_argument("--format", choices=("jsonl", "csv", "parquet"),
                   help="jsonl: the result lines verbatim; csv, parquet: the row's columns, then custom_id, status, "
                        "text, model, tokens, cost_usd, error, attempts (default: from FILE's suffix)")
    r.add_argument("--order", choices=("input", "shard"),
                   help="input: as the input lists the requests (default; a bucket output: shard); shard: as the "
                        "shards hold them (fastest)")
    _common(r, top=False)

    r = sub.add_parser("rerun", help="run the rows of the finished job in DIR that --where picks again, as a new "
                                     "job in DIR.rerun-N (export DIR then shows each row's latest answer)")
    r.add_argument("dir", metavar="DIR", help="the finished job's output directory (a job of rows and a template)")
    r.add_argument("--where", required=True, metavar="'status=errored|invalid|max_tokens'",
                   help="KEY=V1|V2 conditions on the result columns, joined by commas; status matches the stop "
                        "reason too (max_tokens, length)")
    r.add_argument("--params", metavar="FILE.json", help="fields merged over the job's own params for the rerun")
    _common(r, top=False)

    r = sub.add_parser("simulate", help="serve the batch APIs on loopback, faults and all")
    add_simulator_arguments(r)
    _common(r, top=False)

    r = sub.add_parser("daemon", help="run jobs dropped into a spool directory, or claimed from a cluster's ledger")
    add_daemon_arguments(r)
    add_node_arguments(r)
    add_job_options(r, only=_daemon_job_options())
    _common(r, top=False)

    r = sub.add_parser("completion", help="print a shell completion script (bash, zsh or fish) to stdout")
    r.add_argument("shell", choices=("bash", "zsh", "fish"),
                   help="e.g. `batch-scheduler completion bash > ~/.local/share/bash-completion/completions/batch-scheduler`")
    _common(r, top=False)
    return p


def _trust_ledger_url(p: argparse.ArgumentParser) -> None:
    p.add_argument("--trust-ledger-url", action="store_true",
                   help="send the key to the base URL the job's ledger names even when it is not the configured "
                        "one (ANTHROPIC_BASE_URL, OPENAI_BASE_URL, ... or the public API)")


def _daemon_job_options() -> list[str]:
    from batch_scheduler.core.options import JOB_OPTIONS
    return [o.name for o in JOB_OPTIONS if o.name != "dry_run"]
