"""What more than one provider shares: Messages-API auth headers, params checks and result lines.

The Anthropic API and the inline proxy speak the same Messages request and result forms; OpenAI
converts Message Batches lines to chat completions. Shared code lives here, not in a sibling.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from urllib.parse import urlsplit

import orjson

from batch_scheduler.core.headers import merge_headers
from batch_scheduler.core.http import HttpClient
from batch_scheduler.core.settings import Settings
from batch_scheduler.providers.base import TRANSIENT_ERROR_KINDS, BatchInfo, Outcome

_REQUIRED = ("max_tokens", "messages")


def auth_headers(settings: Settings) -> dict[str, str]:
    headers = {"content-type": "application/json"}
    if settings.auth == "bearer":
        headers["authorization"] = f"Bearer {settings.api_key}"
    else:
        headers["x-api-key"] = settings.api_key
    return merge_headers(headers, settings.headers)


def check_message_params(params: object, model: str | None, prefix: str = "params") -> str | None:
    """The fields a Messages request cannot do without; None when it has them."""
    if not isinstance(params, dict):
        return f"{prefix} missing or not an object"
    if "model" not in params and not model:
        return f"{prefix}.model missing (give --model or CLAUDE_MODEL to fill it)"
    for name in _REQUIRED:
        if name not in params:
            return f"{prefix}.{name} missing"
    if params.get("stream"):
        return f"{prefix}.stream is not allowed in a batch"
    return None


def same_origin(a: str, b: str) -> bool:
    pa, pb = urlsplit(a), urlsplit(b)
    return (pa.scheme, pa.netloc) == (pb.scheme, pb.netloc)


def classify_result(line: bytes) -> tuple[str, Outcome, tuple[int, int, int, int, int] | None, str | None]:
    """Route and count one `{"custom_id", "result": {...}}` line (also the inline proxy's form)."""
    doc = orjson.loads(line)
    cid = doc["custom_id"]
    result = doc["result"]
    kind = result["type"]
    if kind == "succeeded":
        message = result["message"]
        u = message.get("usage") or {}
        ttl = u.get("cache_creation")  # {"ephemeral_5m_input_tokens", "ephemeral_1h_input_tokens"}
        usage = (u.get("input_tokens") or 0, u.get("output_tokens") or 0,  # a Usage, as a plain tuple
                 u.get("cache_creation_input_tokens") or 0, u.get("cache_read_input_tokens") or 0,
                 (ttl.get("ephemeral_1h_input_tokens") or 0) if type(ttl) is dict else 0)
        return cid, Outcome.SUCCEEDED, usage, message.get("model")
    if kind == "errored":
        err = result.get("error") or {}
        inner = err.get("error") if isinstance(err.get("error"), dict) else err
        transient = inner.get("type") in TRANSIENT_ERROR_KINDS
        return cid, (Outcome.ERRORED_TRANSIENT if transient else Outcome.ERRORED), None, None
    if kind == "expired":
        return cid, Outcome.EXPIRED, None, None
    if kind == "canceled":
        return cid, Outcome.CANCELED, None, None
    raise ValueError(f"unknown result type {kind!r}")


async def list_since(http: HttpClient, url: str, *, limit: int, cursor: str, since: float,
                     info_of: Callable[[dict], BatchInfo]) -> AsyncIterator[BatchInfo]:
    """Batches created at or after `since`, newest first, page by page (`?limit=&{cursor}=last_id`):
    the list endpoints of Message Batches (`after_id`) and of OpenAI (`after`) page the same way."""
    after: str | None = None
    while True:
        page = orjson.loads(await http.call("GET", f"{url}?limit={limit}" + (f"&{cursor}={after}" if after else ""),
                                            "list"))
        for item in page.get("data") or []:
            info = info_of(item)
            if info.created_at is not None and info.created_at < since:
                return
            yield info
        if not page.get("has_more") or not page.get("last_id"):
            return
        after = page["last_id"]
