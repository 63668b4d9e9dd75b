"""The one small interface every provider implements; the pipeline knows nothing else.

A provider turns request lines into a batch (`create`), says where a batch is (`get`, `recent`),
cancels it, streams its result lines, and reads one result line far enough to route and count it
(`classify`). Input-line validation specific to a provider lives in `check_request`.

What the job asks of a provider without an instance (its limits, its headers, how its lines carry a
request body, how its requests are counted exactly) are class attributes and static methods; what
only some providers do (lanes, tags, an exact token count) has a default here that means "not this
one", so the job reads every member directly and never asks a provider's name.
"""

from __future__ import annotations

import enum
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar, Literal, NamedTuple, Protocol

import orjson
from aiohttp.abc import AbstractStreamWriter
from aiohttp.payload import Payload

from batch_scheduler.core.http import HttpClient
from batch_scheduler.core.settings import ProviderSpec, Settings


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


PIECE_BYTES = 256 << 10  # what RequestsBody hands the connection at a time (under the mmap threshold: see reader)


class RequestsBody(Payload):
    """`requests_body(lines)` as an upload that is never held whole: written to the connection a piece of
    about PIECE_BYTES (on average) at a time (aiohttp waits while the socket's buffer is full). A body is up to 256 MB,
    and the joined copy, with aiohttp's own copy of it behind the headers, were a run's largest objects.
    Its size is known, so the request has a Content-Length as before; it can be written again (a retry)."""

    def __init__(self, lines: list[bytes]):
        super().__init__(lines, content_type="application/json")
        self._size = sum(map(len, lines)) + max(len(lines) - 1, 0) + len(b'{"requests":[]}')

    def decode(self, encoding: str = "utf-8", errors: str = "strict") -> str:
        return requests_body(self._value).decode(encoding, errors)

    async def write(self, writer: AbstractStreamWriter) -> None:
        lines: list[bytes] = self._value
        if not lines:
            await writer.write(b'{"requests":[]}')
            return
        n = len(lines)
        step = max(1, n * PIECE_BYTES // (self._size or 1))  # lines a piece, from their mean size
        for start in range(0, n, step):
            piece = lines[start:start + step]  # references only
            piece[0] = (b'{"requests":[' if start == 0 else b",") + piece[0]
            if start + step >= n:
                piece[-1] = piece[-1] + b"]}"
            await writer.write(b",".join(piece))

    async def write_with_length(self, writer: AbstractStreamWriter, content_length: int | None) -> None:
        await self.write(writer)  # the Content-Length is this body's own size


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
    INVALID = 5  # succeeded, but its JSON does not fit `response_model=` (the collector's judge says so)


# the result types users see (a transient error that ran out of attempts is an `errored` result)
OUTCOME_NAMES = {Outcome.SUCCEEDED: "succeeded", Outcome.ERRORED: "errored", Outcome.ERRORED_TRANSIENT: "errored",
                 Outcome.EXPIRED: "expired", Outcome.CANCELED: "canceled", Outcome.INVALID: "invalid"}
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
    lane: str = "batch"  # "realtime": answers the realtime lane holds (job.send.realtime), not a provider's batch
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


RowApi = Literal["messages", "chat"]  # the request a template row becomes: Messages API params, chat completions
TokenCounts = tuple[list[int], str | None]  # exact input tokens per body, or ([], why none)


class Provider(Protocol):
    """A provider's class: subclass this (the defaults below are inherited), list it in the registry."""

    name: ClassVar[str]  # the --provider value
    spec: ClassVar[ProviderSpec]  # limits, defaults, env names, auth (core.settings.ProviderSpec)
    body_field: ClassVar[str] = "params"  # where a line keeps its request body (the other of params/body second)
    row_api: ClassVar[RowApi] = "messages"  # what a --template row becomes, which --params it takes
    sends_anthropic_version: ClassVar[bool] = False  # its calls carry --anthropic-version
    token_count: ClassVar[str | None] = None  # how `count_tokens` counts exactly (the dry run names it); None: no way
    # Lanes: a provider whose batches must keep requests apart (OpenAI: one model and one endpoint per batch
    # file) names each accepted line's lane; None: one lane for everything (see job.input.batcher).
    lane_of: Callable[[dict], str] | None = None
    # Tags: a provider that keeps the tag `create` was given reads it back from a batch (None: that batch was
    # not created by this program); None here: batches keep no tag, and a lost create is matched by its count.
    tag_of: Callable[[BatchInfo], str | None] | None = None
    # Where an input line names its request: the first of these fields it has (Gemini's own form says `key`).
    id_fields: ClassVar[tuple[str, ...]] = ("custom_id",)
    # The fast check of input lines of the provider's most common shape: given raw lines, the custom_ids of the
    # longest run of them from the first that the full check (orjson, `check_request`) would accept as they came
    # and put in no lane (the line after the run: the full check decides). None here: every line takes the full
    # check.
    plain_check: Callable[[Sequence[bytes]], list[str]] | None = None
    # Estimates: a provider whose lines keep no Messages-like `params`/`body` maps a line to one that does
    # (`{"params": {model, system, messages, tools, max_tokens}}`) for job.money; None: read it as it is.
    estimate_view: Callable[[dict], dict] | None = None

    # Realtime: the endpoint one request at a time goes to (Messages, Chat Completions: job.send.realtime);
    # None: this provider has no realtime lane (--mode realtime and --finish-by are refused).
    realtime_api: ClassVar[str | None] = None
    http: HttpClient
    settings: Settings

    def __init__(self, settings: Settings, http: HttpClient) -> None: ...

    @staticmethod
    def headers(settings: Settings) -> dict[str, str]:
        """The headers every call carries (auth included), before the registry adds the User-Agent."""
        return {}

    @staticmethod
    async def count_tokens(settings: Settings, bodies: list[dict], headers: dict[str, str]) -> TokenCounts:
        """Exact input tokens of request bodies (each line's `body_field`), or ([], why not); never raises.
        Called only when `token_count` is set; `headers` are those of `headers_for`."""
        return [], None

    async def preflight(self) -> None:
        """What must hold before anything is sent (a provider's storage, its project), checked once per run:
        UsageError (exit 2) or AuthRefused (exit 3), one line saying what to set. Default: nothing to check."""
        return None

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

    async def release_job(self, job_tag: str) -> None:
        """The job is done: whatever the provider still stages for it (every create tag starts with `job_tag`)
        may go, such as what a run killed between a batch's collection and its `release` left. Best effort,
        never raises; by default nothing."""
        return None

    async def release(self, info: BatchInfo) -> None:
        """The batch's results are durable: free what the provider keeps for it (Bedrock: the staged S3
        objects, Vertex: the staged Cloud Storage files). Best effort, never raises; by default nothing."""
        return None

    async def answer_now(self, line: bytes, seen: dict[str, str]) -> bytes:
        """One request line sent through the realtime endpoint; its answer as a results line (`classify`
        reads it, the shards keep it). `seen` gets the answer's headers (its rate limits). A refusal of the
        request itself is an errored line; anything else raises as `HttpClient.call` does."""
        raise NotImplementedError(f"{self.name} has no realtime endpoint")

    def error_line(self, custom_id: str, kind: str, message: str) -> bytes:
        """A results line for a request that got no answer (`kind`: an error type, transient when it is in
        TRANSIENT_ERROR_KINDS)."""
        raise NotImplementedError(f"{self.name} has no realtime endpoint")

    def classify(self, line: bytes) -> tuple[str, Outcome, Usage | tuple[int, int, int, int, int] | None, str | None]:
        """(custom_id, outcome, usage, model) of one result line (usage a `Usage` or its plain 5-tuple).
        Raises ValueError if unreadable.

        usage is None for an answer that reports none: for a transient outcome that means it was not
        billed, and it gets the larger attempt budget (see job.collector)."""
