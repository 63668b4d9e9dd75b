"""Walking an OpenAI-style list of batches, in the paging its profile names (profile.ListStyle).

    after   ?limit=N&after=<last_id>, while `has_more` (OpenAI, Azure): common.list_since
    cursor  ?limit=N&cursor=<c>, while `paging.next_cursor` is given (Groq's reference)
    array   one bare JSON array, no paging (Together)
    page    ?page=N&page_size=M&order_by=-created from page 0, while pages hold less than `total` (Mistral)

Each walk is bounded whatever the answers say (a cursor seen before, or LIST_PAGES_MAX pages, ends
it with a warning); an item of another shape is skipped with a warning, a page of another shape is
`errors.BadAnswer`. Batches come newest first and the walk stops at the first one older than `since`
(a bare array is not ordered: every item is read, and the old ones are left out).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson

from batch_scheduler.core import errors
from batch_scheduler.core.http import HttpClient
from batch_scheduler.providers.answers import document, items, mapping, shown, whole
from batch_scheduler.providers.base import BatchInfo
from batch_scheduler.providers.common import LIST_PAGES_MAX, list_since, log
from batch_scheduler.providers.openai.profile import ListStyle

LIST_LIMIT = 100


def _infos(found: list[Any], what: str, info_of: Callable[[dict], BatchInfo]) -> list[BatchInfo]:
    out = []
    for i, item in enumerate(found):
        try:
            if not isinstance(item, dict):
                raise errors.BadAnswer(f"{shown(item)}, expected an object")
            out.append(info_of(item))
        except errors.BadAnswer as err:
            log.warning("%s: item %d skipped: %s", what, i, err)
    return out


async def _array(http: HttpClient, url: str, since: float,
                 info_of: Callable[[dict], BatchInfo]) -> AsyncIterator[BatchInfo]:
    data = await http.call("GET", url, "list")
    try:
        found = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise errors.BadAnswer(f"list answer: not JSON ({exc})") from None
    if isinstance(found, dict):  # an OpenAI-style page where a bare array was expected: read its data
        found = items(found, "data", "list answer")
    if not isinstance(found, list):
        raise errors.BadAnswer(f"list answer: expected a JSON array, got {shown(found)}")
    infos = [i for i in _infos(found, "list answer", info_of) if i.created_at is None or i.created_at >= since]
    for info in sorted(infos, key=lambda i: -(i.created_at or 0)):
        yield info


async def _cursor(http: HttpClient, url: str, since: float,
                  info_of: Callable[[dict], BatchInfo]) -> AsyncIterator[BatchInfo]:
    cursor: str | None = None
    seen: set[str] = set()
    for page_no in range(1, LIST_PAGES_MAX + 1):
        what = f"list answer (page {page_no})"
        page = document(await http.call("GET", f"{url}?limit={LIST_LIMIT}" + (f"&cursor={cursor}" if cursor else ""),
                                         "list"), what)
        for info in _infos(items(page, "data", what), what, info_of):
            if info.created_at is not None and info.created_at < since:
                return
            yield info
        nxt = mapping(page, "paging", what).get("next_cursor")
        if not isinstance(nxt, str) or not nxt:
            return
        if nxt in seen:
            log.warning("%s: the cursor did not advance (%s again); the walk stops here", what, shown(nxt))
            return
        seen.add(nxt)
        cursor = nxt
    log.warning("list batches: stopped after %d pages (a list that always says there is more)", LIST_PAGES_MAX)


async def _pages(http: HttpClient, url: str, since: float,
                 info_of: Callable[[dict], BatchInfo]) -> AsyncIterator[BatchInfo]:
    read = 0
    for page_no in range(LIST_PAGES_MAX):
        what = f"list answer (page {page_no})"
        page = document(await http.call("GET", f"{url}?page={page_no}&page_size={LIST_LIMIT}&order_by=-created",
                                        "list"), what)
        total = whole(page.get("total"), "total", what)
        found = items(page, "data", what)
        for info in _infos(found, what, info_of):
            if info.created_at is not None and info.created_at < since:
                return
            yield info
        read += len(found)
        if not found or read >= total:
            return
    log.warning("list batches: stopped after %d pages (a list that always says there is more)", LIST_PAGES_MAX)


def list_batches(http: HttpClient, url: str, style: ListStyle, *, since: float,
                 info_of: Callable[[dict], BatchInfo]) -> AsyncIterator[BatchInfo]:
    """Batches created at or after `since` (epoch seconds), newest first."""
    if style == "cursor":
        return _cursor(http, url, since, info_of)
    if style == "array":
        return _array(http, url, since, info_of)
    if style == "page":
        return _pages(http, url, since, info_of)
    return list_since(http, url, limit=LIST_LIMIT, cursor="after", since=since, info_of=info_of)
