"""Anthropic Message Batches: create, retrieve, list, cancel, results, delete (API-NOTES §1), and
the free `POST /v1/messages/count_tokens`.

Create checks what the real API checks up front (count, bytes, custom_id, that params is an object,
the queue limit, the spend limit); what lies inside params comes back later as `errored` results,
checked under the request's `anthropic-version` (validation.py). Usage counts come from counting.py,
cache writes and reads included.
"""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from batch_scheduler.simulator.anthropic.plain import plain_requests
from batch_scheduler.simulator.batches import limit_arg, new_batch, parse_requests
from batch_scheduler.simulator.context import SimContext
from batch_scheduler.simulator.counting import prompt_tokens
from batch_scheduler.simulator.responses import (
    Rejected,
    json_response,
    parse_json,
    read_body,
    requests_of,
    stream_jsonl,
)
from batch_scheduler.simulator.store import DAY_S, Batch, Outcome, no_gc, rfc3339
from batch_scheduler.simulator.structured import answer_for, messages_content, shapes_of
from batch_scheduler.simulator.validation import LEGACY_VERSION, messages_problem

PATH = "/v1/messages/batches"
COUNT_PATH = "/v1/messages/count_tokens"
LIST_MAX = 1000
RATE_LIMITS_URL = "https://docs.claude.com/en/api/rate-limits#message-batches-api"


def queue_full_message(limit: int, queued: int, n: int) -> str:
    """The 429 of a create that would pass the organisation's processing-queue limit (what tells it
    from a request-rate 429: "processing queue")."""
    return (f"This request would exceed your organization's limit of {limit:,} message batch requests in "
            f"the processing queue ({queued:,} queued, {n:,} in this batch). Please try again once some "
            f"batches have ended. For details, refer to: {RATE_LIMITS_URL}.")


# A results line per outcome (a succeeded one is written in `result_lines`); custom_ids are validated
# [a-zA-Z0-9_-], so they need no escaping.
_NO_CACHE = (0, 0, 0)
_PLAIN = '{"custom_id":"%s","result":{"type":"%s"}}\n'
_ERRORS = {
    Outcome.API_ERROR: ("api_error", "Internal server error"),
    Outcome.OVERLOADED: ("overloaded_error", "Overloaded"),
    Outcome.INVALID: ("invalid_request_error", "simulated invalid request"),
}


def errored_line(cid: str, kind: str, message: str) -> str:
    result = {"type": "errored", "error": {"type": "error", "error": {"type": kind, "message": message}}}
    return orjson.dumps({"custom_id": cid, "result": result}).decode() + "\n"


def result_lines(batch: Batch, order: list[int]):
    """Anthropic-style results lines (also the inline proxy's), in `order`."""
    token = batch.extra["token"]
    cids, outcomes, missing, cache = batch.custom_ids, batch.outcomes, batch.missing, batch.cache
    models, in_tokens, out_tokens = batch.models, batch.in_tokens, batch.out_tokens
    model_json = {model: orjson.dumps(model).decode() for model in set(models)}
    shapes = batch.extra.get("shapes") or {}
    succeeded = Outcome.SUCCEEDED
    for i in order:  # once per answer: the common case (no missing, no cache, no shape) asks least
        if missing and i in missing:
            continue
        cid = cids[i]
        outcome = outcomes[i]
        if outcome == succeeded:
            out = out_tokens[i]
            five, hour, read = cache.get(i, _NO_CACHE) if cache else _NO_CACHE
            if shapes and i in shapes:
                yield structured_line(batch, i, out, (five, hour, read))
                continue
            yield (f'{{"custom_id":"{cid}","result":{{"type":"succeeded","message":{{"id":"msg_{token}{i:08x}",'
                   f'"type":"message","role":"assistant","model":{model_json[models[i]]},"content":[{{"type":"text",'
                   f'"text":"answer:{cid}","citations":null}}],"stop_reason":"end_turn","stop_sequence":null,"usage":'
                   f'{{"input_tokens":{in_tokens[i]},"output_tokens":{out},"cache_creation_input_tokens":{five + hour},'
                   f'"cache_read_input_tokens":{read},"cache_creation":{{"ephemeral_5m_input_tokens":{five},'
                   f'"ephemeral_1h_input_tokens":{hour}}},"service_tier":"batch"}}}}}}}}\n')  # an f-string: 1/4 faster than %
        elif outcome == Outcome.EXPIRED:
            yield _PLAIN % (cid, "expired")
        elif outcome == Outcome.CANCELED:
            yield _PLAIN % (cid, "canceled")
        else:
            kind, message = _ERRORS[Outcome(outcome)]
            yield errored_line(cid, kind, batch.invalid.get(i, message))


def structured_line(batch: Batch, i: int, out: int, cache: tuple[int, int, int]) -> str:
    """The succeeded line of a request that asked for JSON of a schema (structured.py)."""
    cid, shape = batch.custom_ids[i], batch.extra["shapes"][i]
    data = answer_for(shape, cid, batch.id, batch.extra.get("invalid_json_rate", 0.0))
    content, stop = messages_content(shape, data)
    five, hour, read = cache
    usage = {"input_tokens": batch.in_tokens[i], "output_tokens": out, "cache_creation_input_tokens": five + hour,
             "cache_read_input_tokens": read, "cache_creation": {"ephemeral_5m_input_tokens": five,
                                                                 "ephemeral_1h_input_tokens": hour},
             "service_tier": "batch"}
    message = {"id": f"msg_{batch.extra['token']}{i:08x}", "type": "message", "role": "assistant",
               "model": batch.models[i], "content": content, "stop_reason": stop, "stop_sequence": None,
               "usage": usage}
    return orjson.dumps({"custom_id": cid, "result": {"type": "succeeded", "message": message}}).decode() + "\n"


def anthropic_counts(batch: Batch, ended: bool) -> dict[str, int]:
    if not ended:
        return {"processing": batch.n, "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0}
    counts = batch.extra.get("counts")
    if counts is None:
        c = batch.counts()
        counts = batch.extra["counts"] = {
            "processing": 0, "succeeded": c[Outcome.SUCCEEDED],
            "errored": c[Outcome.INVALID] + c[Outcome.API_ERROR] + c[Outcome.OVERLOADED],
            "canceled": c[Outcome.CANCELED], "expired": c[Outcome.EXPIRED],
        }
    return counts


class AnthropicApi:
    def __init__(self, ctx: SimContext):
        self.ctx = ctx

    def routes(self) -> list[tuple[str, str, str, Any, bool]]:
        """(method, path, call name, handler, is_create)."""
        return [
            ("POST", PATH, "anthropic.create", self.create, True),
            ("GET", PATH, "anthropic.list", self.list, False),
            ("GET", PATH + "/{id}", "anthropic.retrieve", self.retrieve, False),
            ("POST", PATH + "/{id}/cancel", "anthropic.cancel", self.cancel, False),
            ("GET", PATH + "/{id}/results", "anthropic.results", self.results, False),
            ("DELETE", PATH + "/{id}", "anthropic.delete", self.delete, False),
            ("POST", COUNT_PATH, "anthropic.count_tokens", self.count_tokens, False),
        ]

    def doc(self, batch: Batch, request: web.Request | None = None, *, fresh: bool = False,
            canceling: bool = False) -> dict[str, Any]:
        ended = batch.ended(self.ctx.now()) and not fresh and not canceling
        if ended:
            status = "ended"
        elif batch.cancel_at is not None:
            status = "canceling"
        else:
            status = "in_progress"
        return {
            "id": batch.id, "type": "message_batch", "processing_status": status,
            "request_counts": anthropic_counts(batch, ended),
            "created_at": rfc3339(batch.created_wall), "expires_at": rfc3339(batch.created_wall + DAY_S),
            "ended_at": rfc3339(batch.wall(batch.ends_at)) if ended else None,
            "cancel_initiated_at": rfc3339(batch.wall(batch.cancel_at)) if batch.cancel_at is not None else None,
            "archived_at": None,
            "results_url": f"{request.scheme}://{request.host}{PATH}/{batch.id}/results"
            if ended and request is not None else None,
        }

    def find(self, request: web.Request, *, ghosts: bool = True) -> Batch:
        """The batch named in the path; 404 when unknown, or (`ghosts`) still in its ghost window."""
        batch = self.ctx.store.get(request.match_info["id"], "anthropic")
        if batch is None or (ghosts and self.ctx.ghost(batch)):
            raise Rejected("not_found_error", f"no message batch with id '{request.match_info['id']}'")
        return batch

    async def create(self, request: web.Request) -> web.Response:
        body = await read_body(request, self.ctx.config.max_body_bytes)
        version = request.headers.get("anthropic-version", LEGACY_VERSION)
        with no_gc():  # the parsed body is freed (on return) before the GC runs again
            return self._create(body, version)

    def _create(self, body: bytes, version: str) -> web.Response:
        ctx = self.ctx
        config = ctx.config
        plain = plain_requests(body, version)  # the same requests as the general path, when all are plain
        items = requests_of(parse_json(body)) if plain is None else []
        n = len(items) if plain is None else len(plain.custom_ids)
        if n > config.max_requests:  # schema maxItems: a 400, not a 413
            raise Rejected("invalid_request_error", f"requests: List should have at most {config.max_requests} "
                           f"items after validation, not {n}")
        ctx.check_spend()
        now = ctx.now()
        reqs = plain or parse_requests(items, "params", version=version, at_create=config.params_at_create,
                                       cache=ctx.prompt_cache, now=now, as_measured=ctx.config.cache_as_measured)
        check_queue(ctx, n, now)
        batch = new_batch(ctx, "anthropic", "msgbatch_", reqs, now, shapes=shapes_of(items, "params"),
                          invalid_json_rate=config.invalid_json_rate)
        ctx.add_batch(batch)
        return json_response(self.doc(batch, fresh=True))

    async def count_tokens(self, request: web.Request) -> web.Response:
        """`{"input_tokens": N}`: the whole prompt, as `usage` bills it (input + cache write + cache read)."""
        params = parse_json(await read_body(request, self.ctx.config.max_body_bytes))
        if type(params) is not dict:
            raise Rejected("invalid_request_error", "Input should be a valid dictionary")
        if not isinstance(params.get("model"), str) or not params["model"]:
            raise Rejected("invalid_request_error", "model: Field required")
        problem = messages_problem(params.get("messages"))
        if problem:
            raise Rejected("invalid_request_error", problem)
        self.ctx.stats["count_tokens"] += 1
        return json_response({"input_tokens": prompt_tokens(params)[0]})

    async def retrieve(self, request: web.Request) -> web.Response:
        self.ctx.stats["retrieves"] += 1
        return json_response(self.doc(self.find(request), request))

    async def list(self, request: web.Request) -> web.Response:
        self.ctx.stats["lists"] += 1
        limit = limit_arg(request, LIST_MAX)
        page = self.ctx.store.page("anthropic", limit, request.query.get("after_id"),
                                   request.query.get("before_id"))
        if page is None:
            raise Rejected("invalid_request_error", "after_id / before_id: no such message batch")
        batches, more = page
        data = [self.doc(b, request) for b in batches]
        return json_response({"data": data, "has_more": more,
                              "first_id": data[0]["id"] if data else None,
                              "last_id": data[-1]["id"] if data else None})

    async def cancel(self, request: web.Request) -> web.Response:
        batch = self.find(request, ghosts=False)
        canceling = batch.cancel(self.ctx.now(), self.ctx.config.cancel_s)
        self.ctx.stats["cancels"] += 1
        return json_response(self.doc(batch, request, canceling=canceling))

    async def results(self, request: web.Request) -> web.StreamResponse:
        batch = self.find(request)
        if not batch.ended(self.ctx.now()):
            raise Rejected("invalid_request_error",
                           f"message batch '{batch.id}' has not ended; results are available once it has")
        order, cut_at = self.ctx.download_plan(batch.n)
        return await stream_jsonl(request, result_lines(batch, order), cut_at=cut_at)

    async def delete(self, request: web.Request) -> web.Response:
        batch = self.find(request, ghosts=False)
        if not batch.ended(self.ctx.now()):
            raise Rejected("invalid_request_error",
                           f"message batch '{batch.id}' is still processing; cancel it first")
        del self.ctx.store.batches[batch.id]
        self.ctx.stats["deletes"] += 1
        return json_response({"id": batch.id, "type": "message_batch_deleted"})


def check_queue(ctx: SimContext, n: int, now: float) -> None:
    """429 (with retry-after) when `n` more requests would pass the organisation's queue limit."""
    limit = ctx.config.queue_limit
    if limit is None:
        return
    queued = ctx.store.queued(now)
    if queued + n > limit:
        ctx.stats["queue_full"] += 1
        raise Rejected("rate_limit_error", queue_full_message(limit, queued, n),
                       headers={"retry-after": str(ctx.config.retry_after_s)})
