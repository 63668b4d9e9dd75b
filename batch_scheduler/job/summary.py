"""DIR/summary.json, the account of a job's last run, and what counts as a finished request.

A request is finished once its final line is in the shards: a result of type succeeded, errored or
expired (or canceled, as the API spells the type). `status`, the progress line and the summary all
count it so. The summary is written whole to a temporary file and renamed over the old one, so a
reader sees the last run's account or the one before, never half of one.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import orjson

from batch_scheduler.core.errors import ExitCode
from batch_scheduler.core.ledger import RetryState
from batch_scheduler.core.settings import Settings
from batch_scheduler.job.poller import PollStats
from batch_scheduler.job.progress import JobStats

RESULT_TYPES = ("succeeded", "errored", "expired", "canceled")  # final lines, by result type (the API's spelling)
TOKEN_KINDS = ("input", "output", "cache_write", "cache_read")


def finished(counters: Mapping[str, float]) -> int:
    """Requests whose final line is in the shards."""
    return int(sum(counters.get(k, 0) for k in RESULT_TYPES))


def waiting_retry(retries: Mapping[RetryState, int]) -> int:
    """Requests parked for another attempt, in a retry chunk or not yet."""
    return retries.get(RetryState.PENDING, 0) + retries.get(RetryState.ASSIGNED, 0)


def state_of(exit_code: int, cancelled: bool) -> str:
    if exit_code == ExitCode.OK:
        return "done"
    if cancelled:
        return "cancelled"
    return "paused" if exit_code == ExitCode.AUTH else "incomplete"


def build_summary(exit_code: int, message: str, *, cancelled: bool, settings: Settings, inputs: list[str],
                  stats: JobStats, rejected: int, counters: Mapping[str, float], retries: Mapping[RetryState, int],
                  unknown_price_models: set[str], wall_s: float, http_calls: Mapping[tuple[str, Any], int],
                  downloads_restarted: int, polls: PollStats, queue: Mapping[str, Any] | None = None
                  ) -> dict[str, Any]:
    """The summary of a run: the ledger's counters for the whole job, the run's own figures."""
    c = counters
    calls: dict[str, int] = {}
    for (endpoint, status), n in http_calls.items():
        calls[f"{endpoint} {status}"] = calls.get(f"{endpoint} {status}", 0) + n
    return {
        "state": state_of(exit_code, cancelled),
        "message": message,
        "exit_code": exit_code,
        "provider": settings.provider,
        "inputs": inputs,
        "requests": {
            "lines_read": stats.lines_read,
            "accepted": stats.accepted,
            "rejected": rejected,
            "refused_by_api": int(c.get("api_rejected", 0)),
            "finished": finished(c),
            "waiting_retry": waiting_retry(retries),
            "canceled_parked": retries.get(RetryState.CANCELLED, 0),
            "in_failed_batches": retries.get(RetryState.FAILED, 0),
        },
        "results": {k: int(c.get(k, 0)) for k in RESULT_TYPES},
        "errored_after_all_attempts": int(c.get("errored_transient_final", 0)),
        "attempts": {
            "requests_sent": int(c.get("requests_sent", 0)),
            "requests_retried": int(c.get("retried", 0)),
            "max_attempts": settings.max_attempts,
            **{k.removeprefix("final_"): int(v) for k, v in sorted(c.items()) if k.startswith("final_after_")},
        },
        "batches": {
            "created": int(c.get("batches_created", 0)),
            "adopted": int(c.get("batches_adopted", 0)),
            "collected": int(c.get("batches_collected", 0)),
            "failed": int(c.get("batches_failed", 0)),
            "create_outcome_unknown": int(c.get("creates_unknown", 0)),
        },
        "tokens": {k: int(c.get(f"{k}_tokens", 0)) for k in TOKEN_KINDS},
        "cost_usd": round(c.get("cost_usd", 0.0), 6),
        "unknown_price_models": sorted(unknown_price_models),
        "wall_time_s": round(wall_s, 3),
        "throughput_rps": round(stats.finished / wall_s, 1) if wall_s > 0 else None,
        "time_to_first_submit_s": round(stats.first_submit_s, 3) if stats.first_submit_s is not None else None,
        "http": {"calls": calls, "retries": stats.retries, "results_downloads_restarted": downloads_restarted},
        "polls": {"retrieve": polls.retrieves, "list": polls.lists},
        "queue": queue_summary(queue, c),
    }


def queue_summary(run: Mapping[str, Any] | None, counters: Mapping[str, float]) -> dict[str, Any]:
    """The provider's queue: the limit learned (per queue), the hard cap, and the queue-full answers (429s at
    create, token-limit failures) of the whole job and of this run."""
    out: dict[str, Any] = dict(run or {})
    out["queue_full_answers_this_run"] = out.pop("queue_full_answers", 0)
    out["token_limit_failures_this_run"] = out.pop("token_limit_failures", 0)
    out["queue_full_answers"] = int(counters.get("queue_full", 0))
    out["token_limit_failures"] = int(counters.get("token_limit_failures", 0))
    return out


def write_summary(out_dir: str, summary: dict[str, Any]) -> None:
    path = os.path.join(out_dir, "summary.json")
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(orjson.dumps(summary, option=orjson.OPT_INDENT_2))
    os.replace(tmp, path)
