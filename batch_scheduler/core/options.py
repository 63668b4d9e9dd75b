"""The job options: the flags of `run` (and the daemon's defaults), the options a ledger remembers,
and the daemon's `NAME.options.json` files, which name them in snake_case.

A shim for now (the argparse calls moved here from commands/cli.py); a declarative table of the
options replaces it, with this same interface.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import Any

from batch_scheduler.core.errors import UsageError

# options whose values are remembered in the ledger so that `resume DIR` needs none of them
REMEMBERED = frozenset({
    "provider", "base_url", "auth", "header", "anthropic_version", "model", "batch_size", "batch_bytes",
    "concurrency", "poll_min", "poll_max", "shards", "max_attempts", "max_cost", "template", "system",
    "max_tokens", "id_field", "prices", "http_timeout", "inline_create_path", "inline_status_path",
    "inline_results_path"})


def add_job_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("provider")
    g.add_argument("--provider", choices=("anthropic", "openai", "inline"), help="default anthropic")
    g.add_argument("--base-url", help="API base URL (ANTHROPIC_BASE_URL / CLAUDE_BASE_URL / OPENAI_BASE_URL)")
    g.add_argument("--auth", choices=("x-api-key", "bearer"), help="how the key is sent (default x-api-key; "
                   "bearer for openai, inline and most proxies)")
    g.add_argument("--header", action="append", metavar="'Name: value'", help="extra header (repeatable)")
    g.add_argument("--anthropic-version", help="anthropic-version header (default 2023-06-01)")
    g.add_argument("--model", help="fills params.model where a request has none (CLAUDE_MODEL)")
    g.add_argument("--http-timeout", type=float, metavar="S", help="read timeout per call (default 300)")
    g.add_argument("--inline-create-path", help="inline proxy: create path (default /v1/batches)")
    g.add_argument("--inline-status-path", help="inline proxy: status path (default /v1/batches/{id})")
    g.add_argument("--inline-results-path", help="inline proxy: results path (default /v1/batches/{id}/results)")
    g = p.add_argument_group("batching")
    g.add_argument("--batch-size", type=int, metavar="N", help="requests per batch (default 10,000)")
    g.add_argument("--batch-bytes", metavar="SIZE", help="bytes per batch body (default 200MB)")
    g.add_argument("--concurrency", type=int, metavar="K", help="batches in flight at once (default 8)")
    g.add_argument("--poll-min", type=float, metavar="S", help="first poll interval (default 5)")
    g.add_argument("--poll-max", type=float, metavar="S", help="longest poll interval (default 60)")
    g.add_argument("--shards", type=int, metavar="S", help="result shard files (default 16)")
    g.add_argument("--max-attempts", type=int, metavar="N", help="attempts per request (default 3)")
    g = p.add_argument_group("input")
    g.add_argument("--strict", action="store_true", help="refuse the whole job if any line is bad")
    g.add_argument("--template", help="prompt template (string or file) with {field} placeholders, for rows")
    g.add_argument("--system", help="system prompt for templated rows")
    g.add_argument("--max-tokens", type=int, help="max_tokens for templated rows")
    g.add_argument("--id-field", help="row field that holds the custom_id (templated rows)")
    g = p.add_argument_group("cost")
    g.add_argument("--dry-run", action="store_true", help="validate and estimate cost; submit nothing")
    g.add_argument("--max-cost", type=float, metavar="USD", help="submit no new batch past this spend")
    g.add_argument("--prices", metavar="FILE", help="price table overriding the shipped one")
    g.add_argument("--retry-cancelled", action="store_true", help="submit cancelled requests again")


def _names() -> frozenset[str]:
    p = argparse.ArgumentParser(add_help=False)
    add_job_options(p)
    return frozenset(vars(p.parse_args([])))


JOB_OPTION_NAMES = _names()  # argparse dest names (snake_case) of every job option
_IN_FILES = JOB_OPTION_NAMES - {"dry_run"}  # a daemon's option file cannot ask for a dry run


def flags_of(values: argparse.Namespace | Mapping[str, Any]) -> dict[str, Any]:
    """The options given: every value that is not None."""
    items = values.items() if isinstance(values, Mapping) else vars(values).items()
    return {k: v for k, v in items if v is not None}


def coerce_option_file(doc: Mapping[str, Any], where: str) -> dict[str, Any]:
    """The options of a daemon's `NAME.options.json` (already parsed), dest -> value; UsageError naming
    `where` and the key for one that is not a job option."""
    unknown = sorted(set(doc) - _IN_FILES)
    if unknown:
        raise UsageError(f"{where}: unknown option(s) {', '.join(unknown)}; use the names of the "
                         f"command-line flags in snake_case (e.g. batch_size)")
    options = dict(doc)
    if isinstance(options.get("header"), str):
        options["header"] = [options["header"]]
    return flags_of(options)
