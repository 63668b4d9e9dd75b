"""The inline proxy of the article (API-NOTES §3): requests sent inline, Anthropic-style results.

`POST /v1/batches` with `{"requests": [...]}` is dispatched here by the server (OpenAI shares the
path); `GET /v1/batches/{id}` and `.../results` come here for `ibatch_` ids.
A batch ends `completed`, or `expired` when every request expired; results download either way.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from batch_scheduler.simulator.anthropic.api import anthropic_counts, check_queue, result_lines
from batch_scheduler.simulator.batches import new_batch, parse_requests
from batch_scheduler.simulator.context import SimContext
from batch_scheduler.simulator.responses import Rejected, json_response, stream_jsonl
from batch_scheduler.simulator.store import Batch, Outcome, rfc3339
from batch_scheduler.simulator.structured import shapes_of

MESSAGES_URL = "/v1/messages"


def check_inline(i: int, item: dict, body: dict) -> None:
    if item.get("method", "POST") != "POST":
        raise Rejected("invalid_request_error", f"requests.{i}.method: only POST is supported")
    if item.get("url", MESSAGES_URL) != MESSAGES_URL:
        raise Rejected("invalid_request_error", f"requests.{i}.url: must be {MESSAGES_URL}")
    if "system" in body:
        raise Rejected("invalid_request_error",
                       f"requests.{i}.body.system: system is not supported in batch requests; "
                       "fold it into messages")


class InlineApi:
    def __init__(self, ctx: SimContext):
        self.ctx = ctx

    def routes(self) -> list[tuple[str, str, str, Any, bool]]:
        # GET /v1/batches/{id} and .../cancel are OpenAI's routes, which hand ibatch_ ids over here.
        return [("GET", "/v1/batches/{id}/results", "inline.results", self.results, False)]

    def find(self, request: web.Request) -> Batch:
        batch = self.ctx.store.get(request.match_info["id"], "inline")
        if batch is None or self.ctx.ghost(batch):
            raise Rejected("not_found_error", f"no batch with id '{request.match_info['id']}'")
        return batch

    def doc(self, batch: Batch, *, fresh: bool = False) -> dict[str, Any]:
        now = self.ctx.now()
        ended = batch.ended(now) and not fresh
        if not ended:
            status = "in_progress"
        elif batch.outcomes.count(Outcome.EXPIRED) == batch.n:
            status = "expired"
        else:
            status = "completed"
        progress = 100 if ended else (0 if fresh else batch.processed(now) * 100 // max(1, batch.n))
        return {
            "id": batch.id, "object": "batch", "status": status, "progress": progress,
            "request_counts": anthropic_counts(batch, ended),
            "created_at": rfc3339(batch.created_wall),
            "ended_at": rfc3339(batch.wall(batch.ends_at)) if ended else None,
        }

    def create(self, items: list) -> web.Response:
        """Create from the parsed `requests` (the server reads the body: OpenAI shares the path)."""
        ctx = self.ctx
        limit = ctx.config.inline_max_requests
        if len(items) > limit:
            raise Rejected("batch_size_exceeded",
                           f"batch has {len(items):,} requests; at most {limit:,} allowed per batch")
        ctx.check_spend()
        now = ctx.now()
        reqs = parse_requests(items, "body", check_inline, at_create=ctx.config.params_at_create,
                              cache=ctx.prompt_cache, now=now, as_measured=ctx.config.cache_as_measured)
        check_queue(ctx, len(items), now)
        batch = new_batch(ctx, "inline", "ibatch_", reqs, now, shapes=shapes_of(items, "body"),
                          invalid_json_rate=ctx.config.invalid_json_rate)
        ctx.add_batch(batch)
        return json_response(self.doc(batch, fresh=True))

    async def retrieve(self, request: web.Request) -> web.Response:
        self.ctx.stats["retrieves"] += 1
        return json_response(self.doc(self.find(request)))

    async def results(self, request: web.Request) -> web.StreamResponse:
        batch = self.find(request)
        if not batch.ended(self.ctx.now()):
            raise Rejected("invalid_request_error", f"batch '{batch.id}' is still in progress")
        order, cut_at = self.ctx.download_plan(batch.n)
        return await stream_jsonl(request, result_lines(batch, order), cut_at=cut_at)
