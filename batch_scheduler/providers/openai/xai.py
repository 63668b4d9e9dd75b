"""xAI batch (`--provider xai`; PROVIDERS.md §9) over its REST API: an empty named batch, requests added to it,
results paged.

    create:  POST /v1/batches {name}  ->  POST /v1/batches/{id}/requests {batch_requests: [...]} (in pieces)
    poll:    GET /v1/batches/{id}, GET /v1/batches?limit=&pagination_token=
    results: GET /v1/batches/{id}/results?page_size=&pagination_token=
    cancel:  POST /v1/batches/{id}:cancel

The official SDK speaks gRPC only; these REST shapes rest on xAI's guide for the model (empty batch,
added requests, per-request results, the counts in `state`) and on third-party clients for the paths and
the JSON field names (README says which). Lines are chat-completions lines (`{custom_id, method, url,
body}`, or Message Batches lines converted) and each goes as `{batch_request_id: custom_id,
batch_request: {chat_get_completion: body}}`; a batch keeps one model (OpenAI's lanes), though xAI would
take several. A result comes back as an
OpenAI output line (`{custom_id, response: {status_code, body}}`, or `{custom_id, error: {code,
message}}` with the rpc status named), so `classify` is OpenAI's.

A batch has no status: it has ended when nothing is pending and every request it holds is counted
(or it was cancelled and nothing is pending); a `state` of another shape is logged once and read as
still running. The name is the create tag and the request count (`{tag}:{n}`): a lost create is
adopted by it only when the batch holds all `n` requests and was not cancelled. An add that fails
cancels the batch (best effort), so a half-filled batch is never adopted; if the process dies between
the create and the last add, that batch runs on unadopted, and the chunk is sent again (counted in the
summary's `batches.resent_unadopted`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import orjson

from batch_scheduler.core import errors
from batch_scheduler.core.http import HttpClient
from batch_scheduler.core.settings import MB, ProviderSpec, Settings, join_url
from batch_scheduler.providers.answers import BATCH_ID, document, items, shown, text, whole
from batch_scheduler.providers.base import BatchInfo, BatchState, Provider, encode, parse_time
from batch_scheduler.providers.common import LIST_PAGES_MAX, log
from batch_scheduler.providers.openai.lines import CHAT_URL
from batch_scheduler.providers.openai.provider import SPEC as OPENAI_SPEC
from batch_scheduler.providers.openai.provider import OpenAIProvider

ADD_BYTES = 20 * MB  # per add-requests call (xAI: 25 MB)
PAGE_SIZE = 100
ADD_ATTEMPTS = 4  # add-requests calls of one piece whose outcome was unknown, settled by the batch's count
GHOST_FIRST_WAIT_S, GHOST_MAX_WAIT_S = 0.05, 5.0  # a batch answering 404 just after its create: asked again
# google.rpc codes worth another attempt: CANCELLED by xAI, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED, ABORTED,
# INTERNAL, UNAVAILABLE
_TRANSIENT_RPC = {4: "request_timeout", 8: "rate_limit_exceeded", 10: "server_error", 13: "server_error",
                  14: "server_error"}
_SEEN: set[str] = set()

SPEC = ProviderSpec(
    name="xai", max_requests=100_000, max_bytes=200 * MB, default_requests=50_000, default_bytes=200 * MB,
    key_env=("XAI_API_KEY",), base_url_env=("XAI_BASE_URL",), default_base_url="https://api.x.ai",
    default_auth="bearer", model_env=("XAI_MODEL",), custom_id=OPENAI_SPEC.custom_id,
    custom_id_rule=OPENAI_SPEC.custom_id_rule,
    # xAI documents no queue ("unlimited batches", fair use): a start no real job reaches
    queue_start=10_000_000, queue_max=100_000_000)


def _once(what: str, message: str) -> None:
    if message not in _SEEN:
        _SEEN.add(message)
        log.warning("%s: %s; read as still running (said once)", what, message)


def batch_tag(info: BatchInfo) -> str | None:
    """The create tag of a batch that holds every request its create named and was not cancelled."""
    tag, _, n = str(info.raw.get("name") or "").rpartition(":")
    complete = n.isdigit() and info.total == int(n) and not info.raw.get("cancel_time")
    return tag if tag and complete else None


def result_line(item: Any, what: str) -> bytes:
    """One result as an OpenAI output line (ValueError when it names no request)."""
    if not isinstance(item, dict) or not isinstance(item.get("batch_request_id"), str):
        raise ValueError(f"{what}: {shown(item)}, expected a result with a batch_request_id")
    cid = item["batch_request_id"]
    result = item.get("batch_result", item)
    result = result if isinstance(result, dict) else {}
    response, error = result.get("response"), result.get("error")
    if isinstance(response, dict) and "chat_get_completion" in response:
        return encode({"custom_id": cid, "response": {"status_code": 200, "body": response["chat_get_completion"]}})
    error = error if isinstance(error, dict) else {"message": f"no response and no error: {shown(result)}"}
    code = error.get("code")
    kind = _TRANSIENT_RPC.get(code, "batch_cancelled" if code == 1 else "invalid_request") \
        if isinstance(code, int) else "invalid_request"
    return encode({"custom_id": cid, "error": {"code": kind, "message": str(error.get("message")), "rpc_code": code}})


class XaiProvider(OpenAIProvider):
    name = "xai"
    spec = SPEC
    realtime_api = None  # its chat endpoint is not served by the simulator yet: no realtime lane until tested
    token_count = None
    count_tokens = Provider.count_tokens
    tag_of: Callable[[BatchInfo], str | None] | None = staticmethod(batch_tag)

    def __init__(self, settings: Settings, http: HttpClient):
        self.settings = settings
        self.http = http
        self._url = join_url(settings.base_url, "/v1/batches")

    def check_request(self, obj: dict, raw: bytes) -> tuple[str | None, bytes | None]:
        if "body" in obj and obj.get("url") != CHAT_URL:
            return f"url: xAI batches take {CHAT_URL} only, not {shown(obj.get('url'))}", None
        return super().check_request(obj, raw)

    def body_overhead(self, line_bytes: int) -> int:
        return 64  # the request's wrapping in its add call

    async def create(self, lines: list[bytes], *, tag: str) -> BatchInfo:
        info = await self._open(f"{tag}:{len(lines)}")
        try:
            added = 0
            for piece, count in _pieces(lines):
                await self._add(info.id, piece, added, count)
                added += count
        except errors.ProviderError:
            await self._cancel_quietly(info.id)  # half filled: never adopted, never collected
            raise
        return BatchInfo(id=info.id, state=BatchState.IN_PROGRESS, created_at=info.created_at, total=len(lines),
                         raw={**info.raw, "state": {"num_requests": len(lines), "num_pending": len(lines)}})

    async def _open(self, name: str) -> BatchInfo:
        """The empty batch named `name`: created, or (its create's answer lost) found empty by its name."""
        try:
            data = await self.http.call("POST", self._url, "create", body=orjson.dumps({"name": name}),
                                        idempotent=False, headers={"content-type": "application/json"})
        except (errors.OutcomeUnknown, errors.TimeoutError_):
            async for info in self.recent(0):
                if info.raw.get("name") == name and info.total == 0 and not info.raw.get("cancel_time"):
                    return info
            raise
        return self._info(document(data, "create answer"), "create answer")

    async def _add(self, batch_id: str, piece: bytes, before: int, count: int) -> None:
        """One add-requests call; an unknown outcome is settled by the batch's count (it holds `before`: sent
        again; `before + count`: it took), at most ADD_ATTEMPTS times. A count that cannot be read leaves the
        outcome unknown (the caller cancels the batch and the chunk goes again)."""
        for attempt in range(1, ADD_ATTEMPTS + 1):
            try:
                await self.http.call("POST", f"{self._url}/{batch_id}/requests", "add_requests", body=piece,
                                     idempotent=False, headers={"content-type": "application/json"})
                return
            except (errors.OutcomeUnknown, errors.TimeoutError_):
                if attempt == ADD_ATTEMPTS:
                    raise
            held = await self._held(batch_id)
            if held == before + count:
                return
            if held != before:
                raise errors.BadAnswer(f"batch {batch_id}: holds {held} requests after an add of {count} to {before}")

    async def _held(self, batch_id: str) -> int | None:
        """The batch's request count, to settle an add. A batch just made may answer 404 for a while (a ghost,
        as a poll may meet): asked again, backing off, within --not-found-grace; past it, or on a transient
        failure, the add's outcome stays unknown (the caller cancels the batch and the chunk goes again)."""
        deadline = time.monotonic() + self.settings.not_found_grace_s
        wait = GHOST_FIRST_WAIT_S
        while True:
            try:
                return (await self.get(batch_id)).total
            except errors.NotFound as err:
                if time.monotonic() + wait > deadline:
                    raise errors.OutcomeUnknown(f"batch {batch_id}: an add's outcome is unknown ({err})") from err
            except errors.TransientError as err:
                raise errors.OutcomeUnknown(f"batch {batch_id}: an add's outcome is unknown ({err})") from err
            await asyncio.sleep(wait)
            wait = min(wait * 2, GHOST_MAX_WAIT_S)

    async def _cancel_quietly(self, batch_id: str) -> None:
        try:
            await self.cancel(batch_id)
        except errors.ProviderError as err:
            log.warning("batch %s: left half filled, its cancel failed (%s)", batch_id, err)

    async def get(self, batch_id: str) -> BatchInfo:
        data = await self.http.call("GET", f"{self._url}/{batch_id}", "retrieve")
        info = self._info(document(data, f"batch {batch_id}: retrieve answer"), "retrieve answer")
        if info.id != batch_id:
            raise errors.BadAnswer(f"batch {batch_id}: retrieve answer: batch_id is {shown(info.id)}")
        return info

    async def recent(self, since: float) -> AsyncIterator[BatchInfo]:
        found: list[BatchInfo] = []
        token = ""
        for page_no in range(1, LIST_PAGES_MAX + 1):
            what = f"list answer (page {page_no})"
            query = f"?limit={PAGE_SIZE}" + (f"&pagination_token={token}" if token else "")
            page = document(await self.http.call("GET", self._url + query, "list"), what)
            for i, item in enumerate(items(page, "batches", what)):
                try:
                    found.append(self._info(item if isinstance(item, dict) else {}, what))
                except errors.BadAnswer as err:
                    log.warning("%s: batches[%d] skipped: %s", what, i, err)
            nxt = page.get("pagination_token")
            if not isinstance(nxt, str) or not nxt or nxt == token:
                break
            token = nxt
        for info in sorted(found, key=lambda i: -(i.created_at or 0)):
            if info.created_at is None or info.created_at >= since:
                yield info

    async def cancel(self, batch_id: str) -> BatchInfo:
        data = await self.http.call("POST", f"{self._url}/{batch_id}:cancel", "cancel")
        return self._info(document(data, f"batch {batch_id}: cancel answer"), "cancel answer")

    async def result_blocks(self, info: BatchInfo) -> AsyncIterator[list[bytes]]:
        token = ""
        for page_no in range(1, 1_000_000):
            what = f"batch {info.id}: results (page {page_no})"
            query = f"?page_size={PAGE_SIZE}" + (f"&pagination_token={token}" if token else "")
            page = document(await self.http.call("GET", f"{self._url}/{info.id}/results{query}", "results"), what)
            lines = [result_line(item, what) for item in items(page, "results", what)]
            if lines:
                yield lines
            nxt = page.get("pagination_token")
            if not isinstance(nxt, str) or not nxt or nxt == token:
                return
            token = nxt

    def _info(self, doc: dict, what: str = "list answer", asked: str | None = None) -> BatchInfo:
        """A batch object, each field it reads checked; no status: its counts say whether it has ended."""
        bid = text(doc, "batch_id", what, required=True)
        assert bid is not None
        if not BATCH_ID.fullmatch(bid):
            raise errors.BadAnswer(f"{what}: batch_id is {shown(bid)}, expected a batch id")
        what = f"batch {bid}: {what}"
        state = doc.get("state")
        if not isinstance(state, dict):
            _once(what, f"state is {shown(state)}, not the counts xAI documents")
            state = {}
        n = {k: whole(state.get(f"num_{k}"), f"state.num_{k}", what)
             for k in ("requests", "pending", "success", "error", "cancelled")}
        counted = n["success"] + n["error"] + n["cancelled"]
        cancelled = bool(doc.get("cancel_time"))
        ended = n["pending"] == 0 and ((n["requests"] > 0 and counted == n["requests"]) or cancelled)
        return BatchInfo(
            id=bid, state=BatchState.ENDED if ended else BatchState.IN_PROGRESS,
            created_at=parse_time(doc.get("create_time")), ended_at=parse_time(doc.get("cancel_time")),
            total=n["requests"], counts={"total": n["requests"], "completed": n["success"], "failed": n["error"]},
            results=[bid] if ended else [], raw=doc)


def _pieces(lines: list[bytes]) -> Iterator[tuple[bytes, int]]:
    """The add-requests bodies of a batch's lines (each under ADD_BYTES, made one at a time), with their counts."""
    current: list[bytes] = []
    size = 0
    for raw in lines:
        obj = orjson.loads(raw)
        item = encode({"batch_request_id": obj["custom_id"], "batch_request": {"chat_get_completion": obj["body"]}})
        if current and size + len(item) > ADD_BYTES:
            yield b'{"batch_requests":[' + b",".join(current) + b"]}", len(current)
            current, size = [], 0
        current.append(item)
        size += len(item) + 1
    if current:
        yield b'{"batch_requests":[' + b",".join(current) + b"]}", len(current)
