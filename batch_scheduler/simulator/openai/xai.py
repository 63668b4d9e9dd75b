"""xAI batch over REST (PROVIDERS.md §9): an empty named batch, requests added to it, results paged.

    POST /v1/batches {name}                       -> the batch (no requests yet)
    POST /v1/batches/{id}/requests {batch_requests: [{batch_request_id, batch_request: {chat_get_completion}}]}
    GET  /v1/batches/{id}, GET /v1/batches?limit=&pagination_token=  -> {batches, pagination_token}
    GET  /v1/batches/{id}/results?page_size=&pagination_token=       -> {results, pagination_token}
    POST /v1/batches/{id}:cancel

`/v1/batches` is OpenAI's path (and Together's, the inline proxy's): xAI's host is stood for by the prefix
`/xai`, so `{simulator}/xai` is where `https://api.x.ai` would be (XAI_BASE_URL).

Each add-requests call becomes one segment: a store batch of kind `xai` with its own drawn outcomes and
duration (so the store's stats count its requests and tokens, and `creates` counts the adds); the xAI
batch sums its segments into `state {num_requests, num_pending, num_success, num_error, num_cancelled}`
and has no status. A result is `{batch_request_id, batch_result: {response: {chat_get_completion}}}` or
`{batch_request_id, batch_result: {error: {code, message}}}` (a google.rpc code: 14 for a transient
failure, 4 for a request that ran out of time, 1 for a cancelled one, 3 for an invalid one); results are
listed as requests finish. At most 25 MB an add call, and a `batch_request_id` once a batch.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from batch_scheduler.simulator.batches import Requests, new_batch
from batch_scheduler.simulator.context import SimContext
from batch_scheduler.simulator.counting import json_tokens
from batch_scheduler.simulator.openai.api import DEFAULT_MAX_TOKENS
from batch_scheduler.simulator.openai.bodies import content_problem, response_body
from batch_scheduler.simulator.responses import Rejected, json_response, parse_json, read_body
from batch_scheduler.simulator.store import DAY_S, Batch, Outcome, new_id, no_gc, rfc3339

HOST = "/xai"  # stands for api.x.ai
ROOT = f"{HOST}/v1/batches"
CHAT = "/v1/chat/completions"
ADD_MAX_BYTES = 25 * 1000 * 1000
PAGE_MAX = 100
_ERRORS = {Outcome.INVALID: 3, Outcome.EXPIRED: 4, Outcome.CANCELED: 1, Outcome.REQUEST_TIMEOUT: 4}


@dataclass(eq=False)
class XaiBatch:
    id: str
    name: str
    created_at: float  # simulator clock
    created_wall: float
    segments: list[Batch] = field(default_factory=list)
    ids: set[str] = field(default_factory=set)
    cancel_at: float | None = None


def _page_args(request: web.Request, size_name: str) -> tuple[int, int]:
    size, token = request.query.get(size_name, str(PAGE_MAX)), request.query.get("pagination_token", "0")
    if not size.isdigit() or not 1 <= int(size) <= PAGE_MAX or not token.isdigit():
        raise Rejected("invalid_request_error", f"{size_name}: 1 to {PAGE_MAX}; pagination_token: one this API gave")
    return int(size), int(token)


def _requests(doc: Any, seen: set[str]) -> Requests:
    items = doc.get("batch_requests") if isinstance(doc, dict) else None
    if not isinstance(items, list) or not items:
        raise Rejected("invalid_request_error", "batch_requests: expected a non-empty list")
    reqs = Requests()
    for no, item in enumerate(items):
        rid = item.get("batch_request_id") if isinstance(item, dict) else None
        req = item.get("batch_request") if isinstance(item, dict) else None
        body = req.get("chat_get_completion") if isinstance(req, dict) else None
        if not isinstance(rid, str) or not rid or rid in seen or not isinstance(body, dict):
            raise Rejected("invalid_request_error", f"batch_requests[{no}]: a new batch_request_id and a "
                                                    "batch_request.chat_get_completion object are required")
        seen.add(rid)
        reqs.custom_ids.append(rid)
        model: str = body["model"] if isinstance(body.get("model"), str) else ""
        problem = content_problem(CHAT, body) or (None if model else "model: required")
        if problem:
            reqs.add_invalid(problem, model)
            continue
        reqs.models.append(model)
        reqs.max_tokens.append(body.get("max_completion_tokens") or body.get("max_tokens") or DEFAULT_MAX_TOKENS)
        reqs.in_tokens.append(max(1, json_tokens(body["messages"])))
    return reqs


class XaiApi:
    def __init__(self, ctx: SimContext):
        self.ctx = ctx
        self.batches: dict[str, XaiBatch] = {}

    def routes(self) -> list[tuple[str, str, str, Any, bool]]:
        return [
            ("POST", ROOT, "xai.batches.create", self.create, True),
            ("GET", ROOT, "xai.batches.list", self.list, False),
            ("GET", f"{ROOT}/{{id}}", "xai.batches.retrieve", self.retrieve, False),
            # an add makes the billed requests (a segment): its answer is what lost_create_rate loses
            ("POST", f"{ROOT}/{{id}}/requests", "xai.batches.add_requests", self.add, True),
            ("GET", f"{ROOT}/{{id}}/results", "xai.batches.results", self.results, False),
            ("POST", f"{ROOT}/{{id}}:cancel", "xai.batches.cancel", self.cancel, False),
        ]

    def find(self, request: web.Request, *, ghosts: bool = True) -> XaiBatch:
        found = self.batches.get(request.match_info["id"])
        if found is None or (ghosts and found.segments and self.ctx.ghost(found.segments[0])):
            raise Rejected("not_found_error", f"No batch found with id '{request.match_info['id']}'.")
        return found

    async def create(self, request: web.Request) -> web.Response:
        doc = parse_json(await read_body(request, self.ctx.config.max_body_bytes))
        name = doc.get("name") if isinstance(doc, dict) else None
        if not isinstance(name, str) or not name:
            raise Rejected("invalid_request_error", "name: a non-empty string is required")
        self.ctx.check_spend()  # the spend limit refuses a new batch (its adds would be billed)
        made = XaiBatch(new_id("batch_"), name, self.ctx.now(), self.ctx.wall_time())
        self.batches[made.id] = made
        return json_response(self.doc(made))

    async def add(self, request: web.Request) -> web.Response:
        found = self.find(request, ghosts=False)
        body = await read_body(request, self.ctx.config.max_body_bytes)
        if len(body) > ADD_MAX_BYTES:
            raise Rejected("invalid_request_error", f"an add-requests call is limited to {ADD_MAX_BYTES:,} bytes")
        if found.cancel_at is not None:
            raise Rejected("invalid_request_error", "the batch was cancelled: no requests can be added")
        with no_gc():
            reqs = _requests(parse_json(body), found.ids)
        segment = new_batch(self.ctx, "xai", "seg_", reqs, self.ctx.now(), endpoint=CHAT, batch_id=found.id)
        self.ctx.add_batch(segment)
        found.segments.append(segment)
        return json_response({})

    async def retrieve(self, request: web.Request) -> web.Response:
        self.ctx.stats["retrieves"] += 1
        return json_response(self.doc(self.find(request)))

    async def list(self, request: web.Request) -> web.Response:
        self.ctx.stats["lists"] += 1
        size, start = _page_args(request, "limit")
        made = list(reversed(self.batches.values()))
        more = start + size < len(made)
        return json_response({"batches": [self.doc(b) for b in made[start:start + size]],
                              "pagination_token": str(start + size) if more else None})

    async def cancel(self, request: web.Request) -> web.Response:
        found = self.find(request, ghosts=False)
        now = self.ctx.now()
        if found.cancel_at is None:
            found.cancel_at = now
            for segment in found.segments:
                segment.cancel(now, self.ctx.config.cancel_s)
        self.ctx.stats["cancels"] += 1
        return json_response(self.doc(found))

    async def results(self, request: web.Request) -> web.Response:
        found = self.find(request)
        size, start = _page_args(request, "page_size")
        done = list(self._finished(found))
        page = [self._result(segment, i) for segment, i in done[start:start + size]]
        more = start + size < len(done)
        return json_response({"results": page, "pagination_token": str(start + size) if more else None})

    def _finished(self, found: XaiBatch) -> Iterator[tuple[Batch, int]]:
        """The requests with a result now, in the order they were added (the left-out ones never)."""
        now = self.ctx.now()
        for segment in found.segments:
            for i in range(segment.processed(now) if not segment.ended(now) else segment.n):
                if i not in segment.missing:
                    yield segment, i

    def _result(self, segment: Batch, i: int) -> dict[str, Any]:
        outcome = segment.outcomes[i]
        rid = segment.custom_ids[i]
        if outcome == Outcome.SUCCEEDED:
            body = response_body(CHAT, segment, i, int(segment.wall(segment.ends_at)))
            return {"batch_request_id": rid, "batch_result": {"response": {"chat_get_completion": body}}}
        code = _ERRORS.get(Outcome(outcome), 14)
        message = segment.invalid.get(i) or {1: "the batch was cancelled", 4: "the request ran out of time",
                                             14: "the service is unavailable; try again"}.get(code, "invalid")
        return {"batch_request_id": rid, "batch_result": {"error": {"code": code, "message": message}}}

    def doc(self, found: XaiBatch) -> dict[str, Any]:
        now = self.ctx.now()
        n = sum(s.n for s in found.segments)
        counts = {"success": 0, "error": 0, "cancelled": 0}
        for segment, i in self._finished(found):
            outcome = segment.outcomes[i]
            kind = "success" if outcome == Outcome.SUCCEEDED else "cancelled" if outcome == Outcome.CANCELED \
                else "error"
            counts[kind] += 1
        counts["error"] += sum(len(s.missing) for s in found.segments if s.ended(now))  # left out: failed
        done = sum(counts.values())
        return {
            "batch_id": found.id, "name": found.name, "create_time": rfc3339(found.created_wall),
            "expire_time": rfc3339(found.created_wall + DAY_S), "create_api_key_id": "simulator-key",
            "cancel_time": rfc3339(found.created_wall + found.cancel_at - found.created_at)
            if found.cancel_at is not None else None, "cancel_by_xai_message": None,
            "state": {"num_requests": n, "num_pending": n - done, "num_success": counts["success"],
                      "num_error": counts["error"], "num_cancelled": counts["cancelled"]},
            "cost_breakdown": None, "input_file_id": None,
        }
