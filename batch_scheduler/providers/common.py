"""What more than one provider shares: Messages-API auth headers, params checks and result lines.

The Anthropic API and the inline proxy speak the same Messages request and result forms; OpenAI
converts Message Batches lines to chat completions. Shared code lives here, not in a sibling.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from urllib.parse import urlsplit

from batch_scheduler.core import errors
from batch_scheduler.core.headers import merge_headers
from batch_scheduler.core.http import HttpClient
from batch_scheduler.core.settings import Settings
from batch_scheduler.providers.answers import document, items, shown
from batch_scheduler.providers.base import BatchInfo
from batch_scheduler.providers.result_lines import classify_result, classify_result_full

__all__ = ["classify_result", "classify_result_full"]  # result lines are read in result_lines.py; imported from here

log = logging.getLogger("batch_scheduler.providers")

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


LIST_PAGES_MAX = 100  # pages one list walk reads at most (100,000 Anthropic batches, 10,000 OpenAI ones)


async def list_since(http: HttpClient, url: str, *, limit: int, cursor: str, since: float,
                     info_of: Callable[[dict], BatchInfo]) -> AsyncIterator[BatchInfo]:
    """Batches created at or after `since`, newest first, page by page (`?limit=&{cursor}=last_id`):
    the list endpoints of Message Batches (`after_id`) and of OpenAI (`after`) page the same way.

    Bounded, whatever the answers say: a cursor seen before ends the walk, and so do LIST_PAGES_MAX
    pages (each with a warning); an item of another shape is skipped with a warning (a caller that
    wanted it retrieves it), a page of another shape is `errors.BadAnswer`."""
    after: str | None = None
    seen: set[str] = set()
    for page_no in range(1, LIST_PAGES_MAX + 1):
        what = f"list answer (page {page_no})"
        page = document(await http.call("GET", f"{url}?limit={limit}" + (f"&{cursor}={after}" if after else ""),
                                        "list"), what)
        for i, item in enumerate(items(page, "data", what)):
            try:
                if not isinstance(item, dict):
                    raise errors.BadAnswer(f"{shown(item)}, expected an object")
                info = info_of(item)
            except errors.BadAnswer as err:
                log.warning("%s: data[%d] skipped: %s", what, i, err)
                continue
            if info.created_at is not None and info.created_at < since:
                return
            yield info
        last = page.get("last_id")
        if page.get("has_more") is not True or not isinstance(last, str) or not last:
            return
        if last in seen or last == after:
            log.warning("%s: the cursor did not advance (last_id %s again); the walk stops here", what, shown(last))
            return
        seen.add(last)
        after = last
    log.warning("list batches: stopped after %d pages (a list that always says there is more)", LIST_PAGES_MAX)
