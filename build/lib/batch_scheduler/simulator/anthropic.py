"""Anthropic Message Batches: create, retrieve, list, cancel, results, delete (API-NOTES §1).

Create checks what the real API checks up front (sizes, custom_id, params shape, stream); content
problems (missing model / max_tokens / messages) come back later as `errored` results, like the real API.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web

from batch_scheduler.simulator.responses import Rejected, json_response, parse_json, requests_of, stream_jsonl
from batch_scheduler.simulator.store import (
    DAY_S,
    Batch,
    Outcome,
    draw_outcomes,
    new_id,
    no_gc,
    output_tokens,
    rfc3339,
)

if TYPE_CHECKING:
    from batch_scheduler.simulator.server import Simulator

PATH = "/v1/messages/batches"
CUSTOM_ID = re.compile(r"[a-zA-Z0-9_-]{1,64}")
LIST_MAX = 1000


def content_problem(params: dict) -> str | None:
    """What the API would say about a Messages request while processing it; None when it runs."""
    if not isinstance(params.get("model"), str) or not params["model"]:
        return "model: Field required"
    max_tokens = params.get("max_tokens")
    if max_tokens is None:
        return "max_tokens: Field required"
    if type(max_tokens) is not int or max_tokens < 1:
        return "max_tokens: Input should be greater than or equal to 1"
    messages = params.get("messages")
    if messages is None:
        return "messages: Field required"
    if not isinstance(messages, list) or not messages:
        return "messages: at least one message is required"
    return None


class Requests:
    """Parallel lists for the requests of one batch."""

    __slots__ = ("custom_ids", "models", "max_tokens", "in_tokens", "invalid")

    def __init__(self) -> None:
        self.custom_ids: list[str] = []
        self.models: list[str] = []
        self.max_tokens: list[int] = []
        self.in_tokens: list[int] = []
        self.invalid: dict[int, str] = {}


def parse_requests(items: list, key: str, check: Any = None) -> Requests:
    """Validate `[{"custom_id", key: {...}}]` as the API does at create; raise Rejected naming requests.N."""
    out = Requests()
    seen: set[str] = set()
    models: dict[str, str] = {}
    dumps = orjson.dumps
    for i, item in enumerate(items):
        if type(item) is not dict:
            raise Rejected("invalid_request_error", f"requests.{i}: Input should be a valid dictionary")
        cid = item.get("custom_id")
        if cid is None:
            raise Rejected("invalid_request_error", f"requests.{i}.custom_id: Field required")
        if type(cid) is not str or not CUSTOM_ID.fullmatch(cid):
            raise Rejected("invalid_request_error",
                           f"requests.{i}.custom_id: String should match pattern '^[a-zA-Z0-9_-]{{1,64}}$'")
        if cid in seen:
            raise Rejected("invalid_request_error", f"requests.{i}.custom_id: duplicate custom_id '{cid}'")
        seen.add(cid)
        params = item.get(key)
        if params is None:
            raise Rejected("invalid_request_error", f"requests.{i}.{key}: Field required")
        if type(params) is not dict:
            raise Rejected("invalid_request_error", f"requests.{i}.{key}: Input should be a valid dictionary")
        if params.get("stream"):
            raise Rejected("invalid_request_error",
                           f"requests.{i}.{key}.stream: streaming is not supported in batches")
        temperature = params.get("temperature")
        if temperature is not None and (type(temperature) not in (int, float) or not 0 <= temperature <= 1):
            # schema checks of this kind come back at create time, naming the request
            raise Rejected("invalid_request_error",
                           f"requests.{i}.{key}.temperature: Input should be less than or equal to 1")
        if check is not None:
            check(i, item, params)
        out.custom_ids.append(cid)
        problem = content_problem(params)
        if problem:
            out.invalid[i] = problem
            out.models.append("")
            out.max_tokens.append(0)
            out.in_tokens.append(0)
            continue
        model = params["model"]
        out.models.append(models.setdefault(model, model))
        out.max_tokens.append(params["max_tokens"])
        tokens = max(1, len(dumps(params["messages"])) // 4)
        system = params.get("system")
        if system is not None:
            tokens += len(dumps(system)) // 4
        out.in_tokens.append(tokens)
    return out


def limit_arg(request: web.Request, maximum: int) -> int:
    raw = request.query.get("limit", "20")
    try:
        limit = int(raw)
    except ValueError:
        limit = 0
    if not 1 <= limit <= maximum:
        raise Rejected("invalid_request_error", f"limit: must be an integer from 1 to {maximum}")
    return limit


# One results line per outcome; custom_ids are validated [a-zA-Z0-9_-], so they need no escaping.
_SUCCEEDED = (
    '{"custom_id":"%s","result":{"type":"succeeded","message":{"id":"msg_%s%08x","type":"message",'
    '"role":"assistant","model":%s,"content":[{"type":"text","text":"answer:%s"}],"stop_reason":"end_turn",'
    '"stop_sequence":null,"usage":{"input_tokens":%d,"output_tokens":%d,'
    '"cache_creation_input_tokens":0,"cache_read_input_tokens":0}}}}\n'
)
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
    model_json: dict[str, str] = {}
    cids, outcomes = batch.custom_ids, batch.outcomes
    for i in order:
        cid = cids[i]
        outcome = outcomes[i]
        if outcome == Outcome.SUCCEEDED:
            model = batch.models[i]
            mj = model_json.get(model)
            if mj is None:
                mj = model_json[model] = orjson.dumps(model).decode()
            out = output_tokens(cid, batch.max_tokens[i])
            yield _SUCCEEDED % (cid, token, i, mj, cid, batch.in_tokens[i], out)
        elif outcome == Outcome.EXPIRED:
            yield _PLAIN % (cid, "expired")
        elif outcome == Outcome.CANCELED:
            yield _PLAIN % (cid, "canceled")
        else:
            kind, message = _ERRORS[Outcome(outcome)]
            yield errored_line(cid, kind, batch.invalid.get(i, message))


def new_batch(sim: Simulator, kind: str, prefix: str, reqs: Requests, now: float, **extra: Any) -> Batch:
    config = sim.config
    n = len(reqs.custom_ids)
    batch_id = new_id(prefix)
    return Batch(
        id=batch_id, kind=kind, created_wall=sim.wall_time(), created_at=now,
        ends_at=now + config.processing_s + config.processing_per_request_s * n,
        custom_ids=reqs.custom_ids, models=reqs.models, max_tokens=reqs.max_tokens, in_tokens=reqs.in_tokens,
        outcomes=draw_outcomes(sim.rng, n, reqs.invalid, config), invalid=reqs.invalid,
        extra={"token": batch_id[-12:], **extra},
    )


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
    def __init__(self, sim: Simulator):
        self.sim = sim

    def routes(self) -> list[tuple[str, str, str, Any, bool]]:
        """(method, path, call name, handler, is_create)."""
        return [
            ("POST", PATH, "anthropic.create", self.create, True),
            ("GET", PATH, "anthropic.list", self.list, False),
            ("GET", PATH + "/{id}", "anthropic.retrieve", self.retrieve, False),
            ("POST", PATH + "/{id}/cancel", "anthropic.cancel", self.cancel, False),
            ("GET", PATH + "/{id}/results", "anthropic.results", self.results, False),
            ("DELETE", PATH + "/{id}", "anthropic.delete", self.delete, False),
        ]

    def doc(self, batch: Batch, request: web.Request | None = None, *, fresh: bool = False,
            canceling: bool = False) -> dict[str, Any]:
        ended = batch.ended(self.sim.now()) and not fresh and not canceling
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

    def find(self, request: web.Request) -> Batch:
        batch = self.sim.store.get(request.match_info["id"], "anthropic")
        if batch is None:
            raise Rejected("not_found_error", f"no message batch with id '{request.match_info['id']}'")
        return batch

    async def create(self, request: web.Request) -> web.Response:
        body = await self.sim.read_body(request, self.sim.config.max_body_bytes)
        with no_gc():  # the parsed body is freed (on return) before the GC runs again
            return self._create(body)

    def _create(self, body: bytes) -> web.Response:
        sim = self.sim
        items = requests_of(parse_json(body))
        if len(items) > sim.config.max_requests:
            raise Rejected("request_too_large",
                           f"batch has {len(items):,} requests; at most {sim.config.max_requests:,} allowed")
        reqs = parse_requests(items, "params")
        now = sim.check_queue(len(items))
        batch = new_batch(sim, "anthropic", "msgbatch_", reqs, now)
        sim.add_batch(batch)
        return json_response(self.doc(batch, fresh=True))

    async def retrieve(self, request: web.Request) -> web.Response:
        self.sim.stats["retrieves"] += 1
        return json_response(self.doc(self.find(request), request))

    async def list(self, request: web.Request) -> web.Response:
        self.sim.stats["lists"] += 1
        limit = limit_arg(request, LIST_MAX)
        page = self.sim.store.page("anthropic", limit, request.query.get("after_id"),
                                   request.query.get("before_id"))
        if page is None:
            raise Rejected("invalid_request_error", "after_id / before_id: no such message batch")
        batches, more = page
        data = [self.doc(b, request) for b in batches]
        return json_response({"data": data, "has_more": more,
                              "first_id": data[0]["id"] if data else None,
                              "last_id": data[-1]["id"] if data else None})

    async def cancel(self, request: web.Request) -> web.Response:
        batch = self.find(request)
        canceling = batch.cancel(self.sim.now(), self.sim.config.cancel_s)
        self.sim.stats["cancels"] += 1
        return json_response(self.doc(batch, request, canceling=canceling))

    async def results(self, request: web.Request) -> web.StreamResponse:
        batch = self.find(request)
        if not batch.ended(self.sim.now()):
            raise Rejected("invalid_request_error",
                           f"message batch '{batch.id}' has not ended; results are available once it has")
        order, cut_at = self.sim.download_plan(batch.n)
        return await stream_jsonl(request, result_lines(batch, order), cut_at=cut_at)

    async def delete(self, request: web.Request) -> web.Response:
        batch = self.find(request)
        if not batch.ended(self.sim.now()):
            raise Rejected("invalid_request_error",
                           f"message batch '{batch.id}' is still processing; cancel it first")
        del self.sim.store.batches[batch.id]
        self.sim.stats["deletes"] += 1
        return json_response({"id": batch.id, "type": "message_batch_deleted"})
