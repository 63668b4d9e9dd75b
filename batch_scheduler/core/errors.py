"""One tree of errors for the whole program.

    SchedulerError                      root: everything we raise on purpose
    ├── UsageError                      bad flags or configuration (exit 2)
    ├── InputError                      bad input; carries file and line
    ├── JobMismatch                     an --out that belongs to another job or other options
    ├── LeaseLost                       cluster: this node's claim on the job is gone (another node has it)
    ├── LedgerUnavailable               cluster: PostgreSQL cannot be reached (names host and port)
    └── ProviderError                   anything the provider (or the way to it) did
        ├── TransientError              worth another try, after a wait
        │   ├── RateLimited             429; retry_after_s from the server when it gave one
        │   ├── QueueFull               429 at create: the organisation's processing queue is full
        │   ├── ServerError             500, 502, 503, 504, 529 (overloaded)
        │   ├── NetworkError            connection refused, reset or dropped
        │   │   └── OutcomeUnknown      dropped after the body was sent: a batch may exist
        │   └── TimeoutError_           no answer in time (also an unknown outcome on create)
        └── FatalError                  another try cannot help
            ├── AuthRefused             401 / 403: stop everything, exit 3
            ├── RequestRejected         400 / 404 / 409 / 422: the call itself is wrong
            │   └── RequestTooLarge     413: the batch must be split
            └── ProtocolError           an answer we cannot read

`from_status` and `from_exception` are the only places where HTTP statuses and aiohttp
exceptions become these errors.
"""

from __future__ import annotations

import asyncio
import enum
import re

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
    batch of ours to end, and learns a smaller limit (`stated_limit` when the message gives one)."""

    def __init__(self, message: str, *, status: int | None = 429, kind: str | None = None,
                 stated_limit: int | None = None):
        super().__init__(message, status=status, kind=kind)
        self.stated_limit = stated_limit


class ServerError(TransientError):
    pass


class NetworkError(TransientError):
    pass


class OutcomeUnknown(NetworkError):
    """The connection dropped after the request was sent: the call may have taken effect."""


class TimeoutError_(TransientError):
    pass


class FatalError(ProviderError):
    """Another try cannot help."""


class AuthRefused(FatalError):
    pass


class RequestRejected(FatalError):
    pass


class RequestTooLarge(RequestRejected):
    pass


class ProtocolError(FatalError):
    pass


_TRANSIENT_STATUSES = {500, 502, 503, 504, 529}
_REQUEST_INDEX = re.compile(r"requests\.(\d+)")
_QUEUE = re.compile(r"\bqueue", re.IGNORECASE)  # a 429 about the processing queue, not about the request rate
_STATED_LIMIT = re.compile(r"limit of ([\d,]+)", re.IGNORECASE)


def error_message(body: bytes) -> tuple[str | None, str]:
    """(kind, message) out of an error body in the Anthropic or OpenAI shape."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None, body[:200].decode("utf-8", "replace").strip()
    err = doc.get("error") if isinstance(doc, dict) else None
    if isinstance(err, dict):
        kind = err.get("type") or err.get("code")
        return (str(kind) if kind else None), str(err.get("message", ""))
    if isinstance(doc, dict) and "message" in doc:
        return None, str(doc["message"])
    return None, body[:200].decode("utf-8", "replace").strip()


def rejected_request_index(message: str) -> int | None:
    """The index N of `requests.N...` in a 400 message, when the API names one request."""
    m = _REQUEST_INDEX.search(message)
    return int(m.group(1)) if m else None


def queue_full_limit(message: str) -> tuple[bool, int | None]:
    """Whether a 429's message is about the processing queue, and the limit it states (if it states one).

    A request-rate 429 ("rate limit of 1,000 requests per minute") and a spend-limit 429 ("API usage
    limits", `error_code: enforced_spend_limit_reached`) do not name the queue.
    """
    if not _QUEUE.search(message):
        return False, None
    m = _STATED_LIMIT.search(message)
    return True, (int(m.group(1).replace(",", "")) if m and m.group(1).replace(",", "") else None)


def parse_retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


def from_status(status: int, body: bytes, headers: dict | None = None, *, what: str = "") -> ProviderError:
    """Map an HTTP error status (and its body) to the error tree."""
    kind, message = error_message(body)
    text = f"{what}: HTTP {status}" + (f" {kind}" if kind else "") + (f": {message}" if message else "")
    if status in (401, 403):
        return AuthRefused(text, status=status, kind=kind)
    if status == 429 and (queue := queue_full_limit(message))[0]:
        return QueueFull(text, status=status, kind=kind, stated_limit=queue[1])
    if status == 429:
        retry_after = parse_retry_after((headers or {}).get("retry-after"))
        return RateLimited(text, status=status, kind=kind, retry_after_s=retry_after)
    if status == 413:
        return RequestTooLarge(text, status=status, kind=kind)
    if status in _TRANSIENT_STATUSES or status >= 500:
        return ServerError(text, status=status, kind=kind)
    if status == 408:
        return TimeoutError_(text, status=status, kind=kind)
    return RequestRejected(text, status=status, kind=kind)


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
    USAGE = 2  # bad flags or input that refuses the job; nothing was sent
    AUTH = 3  # the API refused the key; nothing in flight is lost
    FORCED = 4  # daemon only: jobs did not stop within the shutdown deadline, exited anyway
