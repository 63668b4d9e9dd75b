"""What the simulator answers with: JSON bodies, error bodies in each provider's shape, streamed JSONL.

Error shapes:
    anthropic / inline  {"type": "error", "error": {"type": KIND, "message": ..., ["details": {...}]},
                         "request_id": ...}
    openai              {"error": {"message": ..., "type": ..., "param": null, "code": ...}}
"""

from __future__ import annotations

import enum
import itertools
import random
from collections.abc import Iterable, Iterator
from typing import Any

import orjson
from aiohttp import web

from batch_scheduler.simulator.store import no_gc

CHUNK_BYTES = 256 * 1024
JSON = "application/json"
_request_serial = itertools.count(1)
_REQUEST_PREFIX = f"req_sim{random.getrandbits(32):08x}"


class Style(enum.Enum):
    ANTHROPIC = "anthropic"
    OPENAI = "openai"
    INLINE = "inline"
    BEDROCK = "bedrock"  # AWS rest-json: the exception's name in x-amzn-ErrorType, the body {"message"}
    GOOGLE = "google"  # google.rpc.Status: {"error": {"code", "message", "status", "details"}}


# Anthropic's documented error kinds (API-NOTES §1); the inline proxy adds batch_size_exceeded.
STATUS = {
    "invalid_request_error": 400, "batch_size_exceeded": 400, "authentication_error": 401,
    "billing_error": 402, "permission_error": 403, "not_found_error": 404, "conflict_error": 409,
    "request_too_large": 413, "rate_limit_error": 429, "api_error": 500, "timeout_error": 504,
    "overloaded_error": 529,
}
# Anthropic kind -> OpenAI (status, type, code). OpenAI has no 529 (overloaded is a 503) and no 402
# (an exhausted quota or balance is a 429 insufficient_quota).
_OPENAI_KINDS: dict[str, tuple[int | None, str, str | None]] = {
    "authentication_error": (None, "invalid_request_error", "invalid_api_key"),
    "permission_error": (None, "invalid_request_error", "permission_denied"),
    "not_found_error": (None, "invalid_request_error", None),
    "request_too_large": (None, "invalid_request_error", "request_too_large"),
    "rate_limit_error": (None, "requests", "rate_limit_exceeded"),
    "billing_error": (429, "insufficient_quota", "insufficient_quota"),
    "conflict_error": (None, "invalid_request_error", "conflict"),
    "api_error": (None, "server_error", None),
    "timeout_error": (None, "server_error", "timeout"),
    "overloaded_error": (503, "server_error", "server_overloaded"),
}


# Anthropic kind -> (status, AWS exception) for Bedrock's answers; an AWS exception name passes as it is.
_AWS_KINDS = {
    "invalid_request_error": (400, "ValidationException"), "authentication_error": (403, "AccessDeniedException"),
    "permission_error": (403, "AccessDeniedException"), "billing_error": (403, "AccessDeniedException"),
    "not_found_error": (404, "ResourceNotFoundException"), "conflict_error": (400, "ConflictException"),
    "rate_limit_error": (429, "ThrottlingException"), "api_error": (500, "InternalServerException"),
    "timeout_error": (504, "InternalServerException"), "overloaded_error": (503, "ServiceUnavailableException"),
    "request_too_large": (413, "ValidationException"),
}


class Rejected(Exception):
    """A call refused with an error answer; raised inside handlers, answered by the route wrapper.

    `details` goes into Anthropic's `error.details` (e.g. `{"error_code": ...}`); `openai` replaces
    the OpenAI (type, code, message) where OpenAI says it differently."""

    def __init__(self, kind: str, message: str, *, status: int | None = None,
                 headers: dict[str, str] | None = None, details: dict | None = None,
                 openai: tuple[str, str | None, str] | None = None):
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.status = status or STATUS.get(kind, 400)
        self.headers = headers or {}
        self.details = details
        self.openai = openai


def request_id() -> str:
    return f"{_REQUEST_PREFIX}{next(_request_serial):012d}"


def json_response(doc: object, *, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    if headers is None or not ({"request-id", "x-request-id", "x-amzn-RequestId"} & set(headers)):
        headers = {"request-id": request_id(), **(headers or {})}
    return web.Response(body=orjson.dumps(doc), status=status, content_type=JSON, headers=headers)


# Anthropic kind -> Google (HTTP status, canonical status); a wrong key is 400 with reason API_KEY_INVALID
_GOOGLE_KINDS = {
    "invalid_request_error": (400, "INVALID_ARGUMENT"), "authentication_error": (400, "INVALID_ARGUMENT"),
    "permission_error": (403, "PERMISSION_DENIED"), "not_found_error": (404, "NOT_FOUND"),
    "conflict_error": (409, "ABORTED"), "request_too_large": (400, "INVALID_ARGUMENT"),
    "rate_limit_error": (429, "RESOURCE_EXHAUSTED"), "billing_error": (429, "RESOURCE_EXHAUSTED"),
    "api_error": (500, "INTERNAL"), "timeout_error": (504, "DEADLINE_EXCEEDED"),
    "overloaded_error": (503, "UNAVAILABLE"),
}


def google_error(exc: Rejected) -> tuple[int, dict]:
    status, name = _GOOGLE_KINDS.get(exc.kind, (exc.status, "FAILED_PRECONDITION"))
    error: dict[str, Any] = {"code": status, "message": exc.message, "status": name}
    reason = "API_KEY_INVALID" if exc.kind == "authentication_error" else \
        "SPENDING_CAP_REACHED" if exc.details or exc.kind == "billing_error" else None  # the spend limit, billing
    if reason:
        error["details"] = [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": reason,
                             "domain": "googleapis.com",
                             "metadata": {"service": "generativelanguage.googleapis.com"}}]
    return status, {"error": error}


def error_response(style: Style, exc: Rejected) -> web.Response:
    rid = request_id()
    status = exc.status
    if style is Style.BEDROCK:
        status, name = _AWS_KINDS.get(exc.kind, (exc.status, exc.kind))
        return json_response({"message": exc.message}, status=status,
                             headers={"x-amzn-RequestId": rid, "x-amzn-ErrorType": name, **exc.headers})
    if style is Style.GOOGLE:
        status, google = google_error(exc)
        return json_response(google, status=status, headers={"x-request-id": rid, **exc.headers})
    if style is Style.OPENAI:
        o_status, otype, code = _OPENAI_KINDS.get(exc.kind, (None, exc.kind, None))
        message = exc.message
        if exc.openai is not None:
            otype, code, message = exc.openai
        status = o_status or status
        doc: dict = {"error": {"message": message, "type": otype, "param": None, "code": code}}
        headers = {"x-request-id": rid, **exc.headers}
    else:
        error: dict[str, Any] = {"type": exc.kind, "message": exc.message}
        if exc.details is not None:
            error["details"] = exc.details
        doc = {"type": "error", "error": error, "request_id": rid}
        headers = {"request-id": rid, **exc.headers}
    return json_response(doc, status=status, headers=headers)


def chunks(lines: Iterable[str], cut_at: int | None = None) -> Iterator[bytes]:
    """Join lines into ~CHUNK_BYTES blocks. With `cut_at`, stop halfway through that line."""
    block: list[str] = []
    size = 0
    for index, line in enumerate(lines):
        if index == cut_at:
            block.append(line[: max(1, len(line) // 2)])
            break
        block.append(line)
        size += len(line)
        if size >= CHUNK_BYTES:
            yield "".join(block).encode()
            block, size = [], 0
    if block:
        yield "".join(block).encode()


async def stream_jsonl(request: web.Request, lines: Iterable[str], *, cut_at: int | None = None,
                       content_type: str = "application/x-jsonl") -> web.StreamResponse:
    """Stream lines in blocks; with `cut_at`, drop the connection in the middle of that line."""
    return await stream_blocks(request, chunks(lines, cut_at), cut=cut_at is not None,
                               content_type=content_type)


async def stream_blocks(request: web.Request, blocks: Iterable[bytes], *, cut: bool = False,
                        content_type: str = "application/octet-stream") -> web.StreamResponse:
    """Stream blocks of bytes; with `cut`, drop the connection after the last one instead of ending."""
    resp = web.StreamResponse(headers={"content-type": content_type, "request-id": request_id()})
    await resp.prepare(request)
    try:
        for block in blocks:
            await resp.write(block)
        if cut:
            drop(request)
            return resp
        await resp.write_eof()
    except ConnectionError:
        pass  # the client went away
    return resp


def drop(request: web.Request) -> None:
    """Close the connection without (finishing) an answer."""
    if request.transport is not None:
        request.transport.close()


async def read_body(request: web.Request, max_bytes: int) -> bytes:
    """The request's body, or `request_too_large` (the body is drained first) past `max_bytes`."""
    if request.content_length is not None and request.content_length > max_bytes:
        async for _ in request.content.iter_chunked(1 << 20):
            pass
        raise Rejected("request_too_large", f"request body is larger than {max_bytes:,} bytes")
    if request.content.at_eof():  # read before (a test's middleware): aiohttp keeps it for the handler
        body = await request.read()
    else:  # the pieces joined once: aiohttp's read() grows a bytearray, then copies it
        body = b"".join([piece async for piece in request.content.iter_any()])
    if len(body) > max_bytes:
        raise Rejected("request_too_large", f"request body is larger than {max_bytes:,} bytes")
    return body


def parse_json(body: bytes) -> Any:
    try:
        with no_gc():
            return orjson.loads(body)
    except orjson.JSONDecodeError:
        raise Rejected("invalid_request_error", "request body is not valid JSON") from None


def requests_of(doc: Any) -> list:
    if not isinstance(doc, dict) or "requests" not in doc:
        raise Rejected("invalid_request_error", "requests: Field required")
    items = doc["requests"]
    if not isinstance(items, list):
        raise Rejected("invalid_request_error", "requests: Input should be a valid list")
    if not items:
        raise Rejected("invalid_request_error", "requests: List should have at least 1 item")
    return items
