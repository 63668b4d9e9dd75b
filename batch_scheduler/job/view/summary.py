"""DIR/summary.json, the account of a job's last run, and what counts as a finished request.

Per model (`models`): answers, tokens by kind, cost at batch prices and at standard prices, and the
saving; kept as ledger counters `model/<kind>/<model>` that the collector adds with each batch.

A request is finished once its final line is in the shards: a result of type succeeded, errored or
expired (or canceled, as the API spells the type). `status`, the progress line and the summary all
count it so (state/jobdir.py). The summary is written whole to a temporary file and renamed over the
old one, so a reader sees the last run's account or the one before, never half of one.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from batch_scheduler.core.errors import ExitCode, UsageError
from batch_scheduler.core.settings import Settings
from batch_scheduler.job.money.estimate import against_usage
from batch_scheduler.job.money.pricing import MODEL_PREFIX, TOKEN_KINDS, PriceTable
from batch_scheduler.job.observe import JobStats
from batch_scheduler.job.send.poller import PollStats
from batch_scheduler.state.jobdir import finished, results_by_type
from batch_scheduler.state.ledger.sqlite import RetryState


def waiting_retry(retries: Mapping[RetryState, int]) -> int:
    """Requests parked for another attempt, in a retry chunk or not yet."""
    return retries.get(RetryState.PENDING, 0) + retries.get(RetryState.ASSIGNED, 0)


def state_of(exit_code: int, cancelled: bool) -> str:
    if exit_code == ExitCode.OK:
        return "done"
    if cancelled:
        return "cancelled"
    return "paused" if exit_code in (ExitCode.AUTH, ExitCode.SPEND_LIMIT) else "incomplete"


def build_summary(exit_code: int, message: str, *, cancelled: bool, settings: Settings, inputs: list[str],
                  stats: JobStats, rejected: int, counters: Mapping[str, float], retries: Mapping[RetryState, int],
                  unknown_price_models: set[str], wall_s: float, http_calls: Mapping[tuple[str, Any], int],
                  downloads_restarted: int, polls: PollStats, estimate: Mapping[str, Any] | None = None,
                  results_not_found: int = 0, queue: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The summary of a run: the ledger's counters for the whole job, the run's own figures."""
    c = counters
    discount = batch_discount_of(settings)
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
            "missing_from_results": int(c.get("missing_from_results", 0)),
        },
        "results": results_by_type(c),
        "errored_after_all_attempts": int(c.get("errored_transient_final", 0)),
        # result lines the API should not have sent: never written
        "ignored_result_lines": {"repeated": int(c.get("results_repeated", 0)),
                                 "foreign": int(c.get("results_foreign", 0))},
        "attempts": {
            "requests_sent": int(c.get("requests_sent", 0)),
            "requests_retried": int(c.get("retried", 0)),
            **({"invalid_retried": int(c["invalid_retried"])} if c.get("invalid_retried") else {}),  # response_model=
            "max_attempts": settings.max_attempts,
            "max_unbilled_attempts": max(settings.max_attempts, settings.max_unbilled_attempts),
            **{k.removeprefix("final_"): int(v) for k, v in sorted(c.items()) if k.startswith("final_after_")},
        },
        "batches": {
            "created": int(c.get("batches_created", 0)),
            "adopted": int(c.get("batches_adopted", 0)),
            "collected": int(c.get("batches_collected", 0)),
            "failed": int(c.get("batches_failed", 0)),
            "create_outcome_unknown": int(c.get("creates_unknown", 0)),
            # of those, the ones whose batch was not found and were sent again: if the lost create did make
            # a batch, it runs and is paid as well (a provider that keeps no tag, after a restart)
            "resent_unadopted": int(c.get("creates_resent", 0)),
        },
        "tokens": {k: int(c.get(f"{k}_tokens", 0)) for k in TOKEN_KINDS},
        "estimate": against_usage(estimate, c),
        "cost_usd": round(c.get("cost_usd", 0.0), 6),
        "unknown_price_models": sorted(unknown_price_models),
        **standard_and_saving(c.get("cost_usd", 0.0), discount, c.get("realtime_extra_usd", 0.0)),
        "realtime": realtime_summary(c),
        "cache": cache_summary(c, settings),
        "models": per_model(c, discount),
        "wall_time_s": round(wall_s, 3),
        "throughput_rps": round(stats.finished / wall_s, 1) if wall_s > 0 else None,
        "time_to_first_submit_s": round(stats.first_submit_s, 3) if stats.first_submit_s is not None else None,
        "http": {"calls": calls, "retries": stats.retries, "results_downloads_restarted": downloads_restarted,
                 "results_not_found": results_not_found},
        "polls": {"retrieve": polls.retrieves, "list": polls.lists, "not_found": polls.not_found},
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


# -- per model ------------------------------------------------------------------------------------

def per_model(counters: Mapping[str, float], batch_discount: float) -> dict[str, dict[str, Any]]:
    """summary.json's `models`: answers, tokens by kind, cost at batch prices, the same at standard prices
    and the saving. (Usage is counted from answers: a request that failed names no model.)"""
    found: dict[str, dict[str, float]] = {}
    for key, value in counters.items():
        if key.startswith(MODEL_PREFIX):
            _, kind, model = key.split("/", 2)
            found.setdefault(model, {})[kind] = value
    out: dict[str, dict[str, Any]] = {}
    for model in sorted(found):
        c = found[model]
        out[model] = {"requests": int(c.get("requests", 0)),
                      "tokens": {k: int(c.get(f"{k}_tokens", 0)) for k in TOKEN_KINDS},
                      "cost_usd": round(c.get("cost_usd", 0.0), 6),
                      **standard_and_saving(c.get("cost_usd", 0.0), batch_discount)}
    return out


def standard_and_saving(cost_usd: float, batch_discount: float, realtime_extra_usd: float = 0.0
                        ) -> dict[str, float]:
    """The same tokens at standard (not batch) prices, and what the batch price saved (`cost_usd` holds
    `realtime_extra_usd` beyond the batch price of the realtime lane's answers, which saved nothing)."""
    batch_priced = cost_usd - realtime_extra_usd
    standard = batch_priced / batch_discount if batch_discount > 0 else batch_priced
    return {"standard_cost_usd": round(standard, 6), "saving_usd": round(standard - cost_usd, 6)}


def realtime_summary(c: Mapping[str, float]) -> dict[str, Any]:
    """The realtime lane: answers it wrote, what they cost beyond the batch price of the same tokens, and
    calls whose answer was lost (they may have been paid; their requests went again)."""
    return {"requests": int(c.get("realtime_requests", 0)),
            "extra_usd": round(c.get("realtime_extra_usd", 0.0), 6),
            "possibly_paid": int(c.get("realtime_possibly_paid", 0))}


def cache_summary(c: Mapping[str, float], settings: Settings) -> dict[str, Any]:
    """Prompt caching: tokens read from and written to the cache, the prefixes primed, and what the cache
    saved against sending every cached token as plain input (reads' discount less writes' premium), at
    the job's batch prices."""
    saved = 0.0
    try:
        table = PriceTable.load(settings.prices_file)
    except UsageError:
        table = PriceTable.load()
    for key, reads in c.items():
        if not key.startswith(f"{MODEL_PREFIX}cache_read_tokens/"):
            continue
        model = key.split("/", 2)[2]
        price = table.price(model)
        if price is None:
            continue
        d = table.batch_discount
        writes = c.get(f"{MODEL_PREFIX}cache_write_tokens/{model}", 0.0)
        hour = c.get(f"{MODEL_PREFIX}cache_write_1h_tokens/{model}", 0.0)
        base = price.rate("input", d)
        saved += (reads * (base - price.rate("cache_read", d)) - (writes - hour) * (price.rate("cache_write", d) - base)
                  - hour * (price.rate("cache_write_1h", d) - base)) / 1e6
    return {"read_tokens": int(c.get("cache_read_tokens", 0)), "write_tokens": int(c.get("cache_write_tokens", 0)),
            "write_1h_tokens": int(c.get("cache_write_1h_tokens", 0)), "primed_prefixes": int(c.get("cache_primed", 0)),
            "saved_usd": round(saved, 6)}


def batch_discount_of(settings: Settings) -> float:
    """The batch discount the job's costs were counted at (its price table's; the shipped one's if that
    file is gone since the run started)."""
    try:
        return PriceTable.load(settings.prices_file).batch_discount
    except UsageError:
        return PriceTable.load().batch_discount
