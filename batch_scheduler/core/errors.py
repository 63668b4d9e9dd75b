"""One tree of errors for the whole program.

    SchedulerError                      root: everything we raise on purpose
    ├── UsageError                      bad flags or configuration (exit 2)
    ├── InputError                      bad input; carries file and line
    ├── JobMismatch                     an --out that belongs to another job or other options
    ├── JobBusy                         another process holds the job's lock (exit 2)
    ├── DiskFull                        no room to write the shards, the ledger or a job file
    ├── LeaseLost                       cluster: this node's claim on the job is gone (another node has it)
    ├── LedgerUnavailable               cluster: PostgreSQL cannot be reached (names host and port)
    └── ProviderError                   anything the provider (or the way to it) did
        ├── TransientError              worth another try, after a wait
        │   ├── RateLimited             429; retry_after_s from the server when it gave one
        │   ├── QueueFull               429 at create: the organisation's processing queue is full
        │   │                           (`jobs`: its cap on jobs at once, not on requests or tokens)
        │   ├── ServerError             500, 502, 503, 529 (overloaded), other 5xx
        │   ├── Conflict                409 conflict_error (a concurrent change; the SDKs retry it)
        │   ├── NetworkError            connection refused, reset or dropped
        │   │   └── OutcomeUnknown      dropped after the body was sent, or (for a create) a 5xx no
        │   │                           provider worded: a batch may exist
        │   └── TimeoutError_           408, 504 timeout_error, no answer in time (an unknown outcome on create)
        ├── SpendLimited                a spend limit (429 enforced_spend_limit_reached, 402 billing_error,
        │                               OpenAI insufficient_quota): a pause until the date the message names
        │                               (exit 5), never retried
        └── FatalError                  another try cannot help
            ├── AuthRefused             401 / 403 / Google's 400 API_KEY_INVALID: stop everything, exit 3
            ├── RequestRejected         400 / 422 / other 4xx: the call itself is wrong
            │   ├── NotFound            404 (for a batch just created: a ghost, see job.poller)
            │   └── RequestTooLarge     413: the batch must be split
            ├── Redirected              3xx: never followed (the key goes only to the configured base URL)
            └── ProtocolError           an answer we cannot read
                └── BadAnswer           an answer of another shape (a field missing or of the wrong type):
                                        one line naming the batch and the field (providers.answers)

`from_status` and `from_exception` are the only places where HTTP statuses and aiohttp
exceptions become these errors (the ledger's SQLite errors are mapped in state/ledger/sqlite.py). `from_status`
decides as the official SDKs do: an `x-should-retry: true|false` header beats the status (except for a
refused key and a spend limit, which pause the job whatever the header says); without it 408, 409, 429
and 5xx are transient.
"""

from __future__ import annotations

import asyncio
import email.utils
import enum
import math
import re
import time
from collections.abc import Mapping

import aiohttp
import orjson


class SchedulerError(Exception):
    """Root of every error the program raises on purpose."""


class UsageError(SchedulerError):
    """Bad flags, options or configuration."""


class InputError(SchedulerError):
    def __init__(self, file: str, line: int, message: str):
        super().__init__(f"{file}:{line}: {message}")
        self.file = file
        self.line = line
        self.reason = message


class JobMismatch(SchedulerError):
    """The output directory belongs to another input or other batch-shaping options."""


class JobBusy(SchedulerError):
    """Another process (a run, resume, cancel or daemon job) holds the job directory's lock."""

    def __init__(self, job_dir: str, holder: str, owner: str | None = None):
        super().__init__(f"{job_dir} is in use: {holder} holds it; wait for that to end (or stop it), "
                         f"then run again")
        self.job_dir = job_dir
        self.holder = holder  # who, in words
        self.owner = owner  # the holder's command ("batch-scheduler run"), None if its record is unreadable


class DiskFull(SchedulerError):
    """No room to write (ENOSPC, EDQUOT, EFBIG, SQLite's "database or disk is full"): free space, run again."""


class LeaseLost(SchedulerError):
    """The node's claim on a cluster job is gone: its lease ran out or another node claimed the job.
    Nothing more is written for the job; the node drops it at once."""


class LedgerUnavailable(SchedulerError):
    """PostgreSQL cannot be reached (refused, timed out, dropped). The message names host and port,
    never the password."""


class ProviderError(SchedulerError):
    def __init__(self, message: str, *, status: int | None = None, kind: str | None = None):
        super().__init__(message)
        self.status = status
        self.kind = kind


class TransientError(ProviderError):
    """Worth another try after a wait."""


class RateLimited(TransientError):
    def __init__(self, message: str, *, status: int | None = 429, kind: str | None = None,
                 retry_after_s: float | None = None):
        super().__init__(message, status=status, kind=kind)
        self.retry_after_s = retry_after_s


class QueueFull(TransientError):
    """A create refused because the provider's processing queue holds all it will take (Anthropic and
    the inline proxy: a 429 that names the queue). Not retried by the HTTP layer: admission waits for a
    batch of ours to end, and learns a smaller limit (`stated_limit` when the message gives one).

    `jobs`: the answer is about the number of jobs at once (Bedrock's jobs-in-progress quota, Gemini's
    concurrent batch jobs, Vertex's Claude jobs), not the requests or tokens queued: admission learns it
    in the provider's jobs queue and never shrinks a batch for it. The provider sets it where it maps the
    answer (`about_jobs`)."""

    def __init__(self, message: str, *, status: int | None = 429, kind: str | None = None,
                 stated_limit: int | None = None, jobs: bool = False):
        super().__init__(message, status=status, kind=kind)
        self.stated_limit = stated_limit
        self.jobs = jobs

    def about_jobs(self) -> QueueFull:
        """The same answer, known to be about the number of jobs."""
        return QueueFull(str(self), status=self.status, kind=self.kind, stated_limit=self.stated_limit, jobs=True)


class ServerError(TransientError):
    pass


class NetworkError(TransientError):
    pass


class OutcomeUnknown(NetworkError):
    """The connection dropped after the request was sent, or a gateway answered a 5xx in the provider's place:
    the call may have taken effect."""


class Conflict(TransientError):
    """409 conflict_error: another operation on the resource was in progress."""


class TimeoutError_(TransientError):
    pass


class SpendLimited(ProviderError):
    """The organisation's spend limit (or its credit) is used up: no call that costs money can succeed
    until the date the provider's message names. Neither retried nor fatal: the job pauses."""


class FatalError(ProviderError):
    """Another try cannot help."""


class AuthRefused(FatalError):
    pass


class RequestRejected(FatalError):
    pass


class NotFound(RequestRejected):
    """404. For a batch this job was just given, the real API has answered so for a while (job.poller)."""


class RequestTooLarge(RequestRejected):
    pass


class BatchVanished(FatalError):
    """A batch this job recorded kept answering 404 for longer than --not-found-grace."""

    @classmethod
    def of(cls, batch_id: str, what: str, grace_s: float) -> BatchVanished:
        return cls(f"batch {batch_id}: {what} answered 404 not_found_error for more than {grace_s:g} s "
                   f"(--not-found-grace) since its create or its last answer; the ledger keeps the batch: run "
                   f"the same command again to look for it again")


class Redirected(FatalError):
    """A 3xx answer. Redirects are never followed (as the official SDKs): the key and the body would go
    to whatever host the Location names. The message names it."""


class ProtocolError(FatalError):
    pass


class BadAnswer(ProtocolError):
    """An answer whose shape is not what the code reads (a field missing, of the wrong type): the poller
    asks again a bounded number of times, the submitter treats a create's as an unknown outcome."""


_REQUEST_INDEX = re.compile(r"requests\.(\d+)")
# `error.details.error_code` of a 429 that is a spend limit, not a rate (anthropic 2.15's
# EnforcedSpendLimitReachedError, ContractSpendLimitReachedError); OpenAI says `insufficient_quota`
SPEND_LIMIT_CODES = frozenset({"enforced_spend_limit_reached", "contract_spend_limit_reached"})
OPENAI_QUOTA_CODE = "insufficient_quota"
_QUEUE = re.compile(r"\b(?:en)?queue", re.IGNORECASE)  # a 429 about the processing queue (Gemini: enqueued
#                                                          tokens, concurrent batches), not about the request rate
GOOGLE_KEY_REASONS = frozenset({"API_KEY_INVALID", "API_KEY_EXPIRED"})
# a Google 429 whose ErrorInfo names a spend cap (the wire form of Gemini's spend caps is not documented:
# this is the simulator's, and the billing-disabled reason Google's APIs use)
GOOGLE_SPEND_REASONS = frozenset({"SPENDING_CAP_REACHED", "BILLING_DISABLED"})
_STATED_LIMIT = re.compile(r"limit of ([\d,]+)", re.IGNORECASE)


def _error_doc(body: bytes) -> tuple[dict | None, str | None]:
    """The `error` object of an error body, or (None, the body's first bytes as text)."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None, body[:200].decode("utf-8", "replace").strip()
    err = doc.get("error") if isinstance(doc, dict) else None
    if isinstance(err, dict):
        return err, None
    if isinstance(doc, dict) and "message" in doc:
        return None, str(doc["message"])
    return None, body[:200].decode("utf-8", "replace").strip()


def error_message(body: bytes) -> tuple[str | None, str]:
    """(kind, message) out of an error body in the Anthropic, OpenAI or Google (google.rpc.Status) shape."""
    err, text = _error_doc(body)
    if err is None:
        return None, text or ""
    kind = err.get("type") or err.get("status") or err.get("code")
    return (str(kind) if kind else None), str(err.get("message", ""))


def _google_reason(body: bytes) -> str | None:
    """The `reason` of a google.rpc.Status's ErrorInfo detail (Gemini: API_KEY_INVALID for a wrong key,
    answered 400 INVALID_ARGUMENT, not 401)."""
    err, _ = _error_doc(body)
    details = err.get("details") if err is not None else None
    for detail in details if isinstance(details, list) else []:
        if isinstance(detail, dict) and isinstance(detail.get("reason"), str):
            return str(detail["reason"])
    return None


def _is_spend_limit(status: int, body: bytes) -> bool:
    """A 429 whose details name a spend limit, OpenAI's exhausted quota, or 402 billing_error."""
    if status == 402:
        return True
    if status != 429:
        return False
    err, _ = _error_doc(body)
    if err is None:
        return False
    details = err.get("details")
    code = details.get("error_code") if isinstance(details, dict) else None
    return (code in SPEND_LIMIT_CODES or OPENAI_QUOTA_CODE in (err.get("code"), err.get("type"))
            or _google_reason(body) in GOOGLE_SPEND_REASONS)


def rejected_request_index(message: str) -> int | None:
    """The index N of `requests.N...` in a 400 message, when the API names one request."""
    m = _REQUEST_INDEX.search(message)
    return int(m.group(1)) if m else None


def parse_retry_after(value: str | None, *, ms: str | None = None, now: float | None = None) -> float | None:
    """Seconds to wait from `retry-after-ms` (which the SDKs read first), else `retry-after` in seconds
    or as an HTTP date; None when neither says."""
    for text, scale in ((ms, 0.001), (value, 1.0)):
        if not text:
            continue
        try:
            seconds = float(text) * scale
        except ValueError:
            continue
        if math.isfinite(seconds):
            return max(0.0, seconds)
    if value:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is not None:
            return max(0.0, when.timestamp() - (time.time() if now is None else now))
    return None


def queue_full_limit(message: str) -> tuple[bool, int | None]:
    """Whether a 429's message is about the processing queue, and the limit it states (if it states one).

    A request-rate 429 ("rate limit of 1,000 requests per minute") and a spend-limit 429 ("API usage
    limits", `error_code: enforced_spend_limit_reached`) do not name the queue.
    """
    if not _QUEUE.search(message):
        return False, None
    m = _STATED_LIMIT.search(message)
    return True, (int(m.group(1).replace(",", "")) if m and m.group(1).replace(",", "") else None)


# AWS exceptions whose status says otherwise than their name (Bedrock: a full jobs-in-progress quota is a 400)
AWS_EXCEPTIONS: dict[str, type[ProviderError]] = {"ServiceQuotaExceededException": QueueFull,
                                                  "ConflictException": Conflict}


def from_status(status: int, body: bytes, headers: Mapping[str, str] | None = None, *,
                what: str = "") -> ProviderError:
    """Map an HTTP error status (its body and headers) to the error tree, as the official SDKs decide."""
    kind, message = error_message(body)
    h = {k.lower(): v for k, v in (headers or {}).items()}
    aws = h.get("x-amzn-errortype", "").partition(":")[0].strip()  # AWS rest-json: the exception's name
    kind = aws or kind
    text = f"{what}: HTTP {status}" + (f" {kind}" if kind else "") + (f": {message}" if message else "")
    if aws in AWS_EXCEPTIONS:  # mapped by name, not status: a quota exception is a 400 that means "wait"
        return AWS_EXCEPTIONS[aws](text, status=status, kind=kind)
    if 300 <= status < 400:
        return Redirected(f"{what}: HTTP {status} redirect to {h.get('location') or '(no Location)'}: not followed "
                          f"(the key goes only to the configured base URL)", status=status)
    if status in (401, 403) or (status == 400 and _google_reason(body) in GOOGLE_KEY_REASONS):
        return AuthRefused(text, status=status, kind=kind)
    if _is_spend_limit(status, body):
        return SpendLimited(text, status=status, kind=kind)
    if status == 429 and (queue := queue_full_limit(message))[0]:
        return QueueFull(text, status=status, kind=kind, stated_limit=queue[1])
    cls = _class_of(status)
    should_retry = h.get("x-should-retry", "").strip().lower()
    if should_retry == "true" and not issubclass(cls, TransientError):
        cls = ServerError
    elif should_retry == "false" and issubclass(cls, TransientError):
        cls = RequestRejected
    if cls is RateLimited:
        return RateLimited(text, status=status, kind=kind,
                           retry_after_s=parse_retry_after(h.get("retry-after"), ms=h.get("retry-after-ms")))
    return cls(text, status=status, kind=kind)


def _class_of(status: int) -> type[ProviderError]:
    """The error class of a status without headers (the SDKs retry 408, 409, 429 and 5xx)."""
    if status == 429:
        return RateLimited
    if status in (408, 504):
        return TimeoutError_
    if status == 409:
        return Conflict
    if status >= 500:
        return ServerError
    if status == 404:
        return NotFound
    if status == 413:
        return RequestTooLarge
    return RequestRejected


def from_exception(exc: BaseException, *, what: str = "", sent: bool = False) -> ProviderError:
    """Map an aiohttp / asyncio exception to the error tree.

    `sent` says the request body was fully written: a drop after that leaves the outcome unknown.
    """
    name = type(exc).__name__
    if isinstance(exc, ProviderError):
        return exc
    if isinstance(exc, asyncio.TimeoutError | aiohttp.ServerTimeoutError):
        return TimeoutError_(f"{what}: timed out ({name})")
    if isinstance(exc, aiohttp.ClientConnectorError):
        return NetworkError(f"{what}: cannot connect ({name})")
    if isinstance(exc, aiohttp.ClientPayloadError | aiohttp.ServerDisconnectedError
                  | aiohttp.ClientOSError | ConnectionResetError):
        cls = OutcomeUnknown if sent else NetworkError
        return cls(f"{what}: connection dropped ({name})")
    if isinstance(exc, aiohttp.ClientConnectionError | OSError):
        return NetworkError(f"{what}: cannot connect ({name}: {exc})")
    if isinstance(exc, orjson.JSONDecodeError | ValueError | KeyError | TypeError):
        return ProtocolError(f"{what}: unreadable answer ({name}: {exc})")
    if isinstance(exc, aiohttp.ClientError):
        return NetworkError(f"{what}: {name}: {exc}")
    return ProtocolError(f"{what}: {name}: {exc}")


class ExitCode(enum.IntEnum):
    """Exit statuses shared by `run`, `resume`, `cancel` and the daemon (README's exit-status table)."""

    OK = 0  # every accepted request reached a final result (daemon: stopped on SIGTERM/SIGINT)
    FAILED = 1  # anything else; the job is resumable (daemon: it failed itself, systemd restarts it)
    USAGE = 2  # bad flags or input that refuses the job, or a refusal (the job in use, unknown results); nothing sent
    AUTH = 3  # the API refused the key; nothing in flight is lost
    FORCED = 4  # daemon only: jobs did not stop within the shutdown deadline, exited anyway
    SPEND_LIMIT = 5  # the provider's spend limit is reached; batches in flight were collected, resumable
    HANGUP = 129  # run/resume: stopped by SIGHUP (128 + its number); everything is kept, the same command resumes
    INTERRUPTED = 130  # run/resume: stopped by SIGINT (Ctrl-C); likewise
    TERMINATED = 143  # run/resume: stopped by SIGTERM; likewise
