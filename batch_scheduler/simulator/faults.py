"""The faults of calls: failing answers, ghost 404s, the spend limit, the billing error.

Failing calls (`fail_rate`) draw one kind from `fail_kinds` (default every kind):

    kind               Anthropic / inline                 OpenAI
    rate_limit_error   429 + retry-after (whole seconds)  429 rate_limit_exceeded + retry-after
    api_error          500                                500 server_error
    timeout_error      504                                504 server_error
    conflict_error     409                                409 conflict
    overloaded_error   529                                503 server_overloaded (OpenAI has no 529)
    dropped            the connection closes without an answer

A ghost 404 answers `retrieve` and `results` (OpenAI: the batch and its files) with the same 404 as
for an unknown id for `ghost_404_s` after the batch's create, as the real API was seen to do
(anthropic-sdk-python#1432). The spend limit is a 429 `rate_limit_error` with
`error.details.error_code = "enforced_spend_limit_reached"`, no retry-after, and a message saying
when access resumes (OpenAI: 429 insufficient_quota).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from batch_scheduler.simulator.config import FAULT_KINDS
from batch_scheduler.simulator.responses import Rejected, Style

RATE_LIMIT_RPM = 1_000  # the lowest tier's requests per minute on the batch endpoints, named in the message

_MESSAGES = {
    Style.ANTHROPIC: {
        "rate_limit_error": f"This request would exceed your organization's rate limit of {RATE_LIMIT_RPM:,} "
                            "requests per minute on the Message Batches API. For details, refer to: "
                            "https://docs.claude.com/en/api/rate-limits.",
        "api_error": "Internal server error",
        "timeout_error": "Request timed out",
        "conflict_error": "A conflicting operation is in progress. Please try again.",
        "overloaded_error": "Overloaded",
    },
    Style.OPENAI: {
        "rate_limit_error": f"Rate limit reached for requests per minute (RPM): Limit {RATE_LIMIT_RPM:,}. "
                            "Please try again in 1s.",
        "api_error": "The server had an error while processing your request. Sorry about that!",
        "timeout_error": "Gateway timeout. Please try again.",
        "conflict_error": "Another request for this resource is in progress. Please try again.",
        "overloaded_error": "The server is overloaded or not ready yet.",
    },
}
_MESSAGES[Style.INLINE] = _MESSAGES[Style.BEDROCK] = _MESSAGES[Style.ANTHROPIC]
_MESSAGES[Style.GOOGLE] = {
    "rate_limit_error": "Resource has been exhausted (e.g. check quota).",
    "api_error": "Internal error encountered.",
    "timeout_error": "The request timed out. Please try again.",
    "conflict_error": "The operation was aborted. Please try again.",
    "overloaded_error": "The model is overloaded. Please try again later.",
}
SPEND_LIMIT_CODE = "enforced_spend_limit_reached"
_QUOTA = ("insufficient_quota", "insufficient_quota",
          "You exceeded your current quota, please check your plan and billing details. For more "
          "information on this error, read the docs: https://platform.openai.com/docs/guides/error-codes/api-errors.")
BILLING_MESSAGE = ("Your credit balance is too low to access the Anthropic API. Please go to Plans & Billing "
                   "to upgrade or purchase credits.")


def draw_kind(rng: Any, config: Any) -> str | None:
    """The kind of failure for one call, or None (answer normally)."""
    if config.fail_rate and rng.random() < config.fail_rate:
        return rng.choice(config.fail_kinds or FAULT_KINDS)
    return None


def fault_error(kind: str, style: Style, retry_after_s: int) -> Rejected:
    headers = {"retry-after": str(max(0, int(retry_after_s)))} if kind == "rate_limit_error" else None
    return Rejected(kind, _MESSAGES[style][kind], headers=headers)


def next_month(epoch_s: float) -> datetime:
    """Midnight UTC of the first day of the month after `epoch_s` (when a monthly limit resets)."""
    now = datetime.fromtimestamp(epoch_s, UTC)
    year, month = (now.year + 1, 1) if now.month == 12 else (now.year, now.month + 1)
    return datetime(year, month, 1, tzinfo=UTC)


def spend_limit_error(wall_s: float) -> Rejected:
    resumes = next_month(wall_s)
    message = (f"You have reached your specified API usage limits. You will regain access on "
               f"{resumes:%Y-%m-%d} at 00:00 UTC.")
    return Rejected("rate_limit_error", message, details={"error_code": SPEND_LIMIT_CODE}, openai=_QUOTA)


def billing_error() -> Rejected:
    return Rejected("billing_error", BILLING_MESSAGE, openai=_QUOTA)


def ghost(config: Any, created_at: float, now: float) -> bool:
    """Whether a batch created at `created_at` still answers 404 at `now`."""
    return bool(config.ghost_404_s) and now - created_at < config.ghost_404_s

