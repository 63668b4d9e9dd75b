"""The one small interface every provider implements; the pipeline knows nothing else.

A provider turns request lines into a batch (`create`), says where a batch is (`get`, `recent`),
cancels it, streams its result lines, and reads one result line far enough to route and count it
(`classify`). Input-line validation specific to a provider lives in `check_request`.
"""

from __future__ import annotations

import enum
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple, Protocol

import orjson

from batch_scheduler.core.http import HttpClient
from batch_scheduler.core.settings import Settings


def encode(obj: object) -> bytes:
    """orjson.dumps, copied to its exact size: orjson's buffer is several times the output (8 KB for a
    1 KB line), and request lines are held by the thousand (a chunk in flight)."""
    return bytes(memoryview(orjson.dumps(obj)))


def requests_body(lines: list[bytes]) -> bytes:
    """`{"requests":[line,line,...]}` in one copy of the lines (a batch body is up to 256 MB)."""
    if not lines:
        return b'{"requests":[]}'
    parts = lines.copy()  # references only
    parts[0] = b'{"requests":[' + parts[0]
    parts[-1] = parts[-1] + b"]}"
    return b",".join(parts)


class BatchState(enum.Enum):
    IN_PROGRESS = "in_progress"
    ENDED = "ended"  # results can be downloaded
    FAILED = "failed"  # the provider refused the batch as a whole (e.g. OpenAI validation)


class Outcome(enum.IntEnum):
    SUCCEEDED = 0
    ERRORED = 1  # permanent: the request itself is wrong
    ERRORED_TRANSIENT = 2  # worth another attempt
    EXPIRED = 3  # worth another attempt
    CANCELED = 4


# the result types users see (a transient error that ran out of attempts is an `errored` result)
OUTCOME_NAMES = {Outcome.SUCCEEDED: "succeeded", Outcome.ERRORED: "errored", Outcome.ERRORED_TRANSIENT: "errored",
                 Outcome.EXPIRED: "expired", Outcome.CANCELED: "canceled"}
# Error kinds (Anthropic `error.type`, OpenAI error-file `code`) of an answer worth another attempt; OpenAI's
# `request_timeout` is "the underlying call to the model timed out". Anything else errored is final.
TRANSIENT_ERROR_KINDS = frozenset({"api_error", "overloaded_error", "rate_limit_error", "timeout_error",
                                   "server_error", "rate_limit_exceeded", "internal_error", "request_timeout"})


class Usage(NamedTuple):
    """Tokens of one answer (or a sum). `classify` may return a plain 5-tuple in this order: it is one
    per result line, and a tuple is cheaper to build than any class."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_write_tokens: int = 0  # every cache write, both TTLs
    cache_read_tokens: int = 0
    cache_write_1h_tokens: int = 0  # the part of cache_write_tokens written for the 1-hour TTL (2x input)


@dataclass
class BatchInfo:
    id: str
    state: BatchState
    created_at: float | None = None  # epoch seconds
    ended_at: float | None = None
    total: int | None = None  # requests in the batch
    counts: dict[str, int] = field(default_factory=dict)
    results: list[str] = field(default_factory=list)  # where to download results (provider-specific)
    error: str | None = None  # why a FAILED batch failed
    validated: bool = True  # the provider has taken the batch into its queue (OpenAI: past `validating`)
    queue_full: bool = False  # FAILED because its model's queue was full (OpenAI `token_limit_exceeded`)
    stated_limit: int | None = None  # the queue limit the provider named when it said so
    raw: dict[str, Any] = field(default_factory=dict, repr=False)


def parse_time(value: Any) -> float | None:
    """RFC 3339 string or epoch number -> epoch seconds."""
    if value is None:
        return None
    if isinstance(value, int | float):
        return float(value)
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


class Provider(Protocol):
    name: str
    http: HttpClient
    settings: Settings

    def check_request(self, obj: dict, raw: bytes) -> tuple[str | None, bytes | None]:
        """(error, line bytes to send) for one parsed input line; the custom_id is already checked.

        Return the raw bytes untouched when they can be sent as they are.
        """

    def body_overhead(self, line_bytes: int) -> int:
        """Bytes a line adds to a batch body beyond its own length (separators, wrapping)."""

    async def create(self, lines: list[bytes], *, tag: str) -> BatchInfo:
        """Create one batch from request lines. May raise OutcomeUnknown: a batch may exist."""

    async def get(self, batch_id: str) -> BatchInfo: ...

    def recent(self, since: float) -> AsyncIterator[BatchInfo]:
        """Batches created at or after `since` (epoch seconds), newest first."""

    async def cancel(self, batch_id: str) -> BatchInfo: ...

    def result_blocks(self, info: BatchInfo) -> AsyncIterator[list[bytes]]:
        """Every result line of an ended batch, in blocks; one attempt (restart on failure)."""

    def classify(self, line: bytes) -> tuple[str, Outcome, Usage | None, str | None]:
        """(custom_id, outcome, usage, model) of one result line. Raises ValueError if unreadable.

        usage is None for an answer that reports none: for a transient outcome that means it was not
        billed, and it gets the larger attempt budget (see job.collector)."""
