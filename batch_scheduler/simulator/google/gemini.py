"""Gemini Batch Mode (PROVIDERS.md §1), under /v1beta and /v1: create, get, list, cancel, delete.

    POST /{v}/models/{model}:batchGenerateContent  {"batch": {displayName, inputConfig: {requests | fileName}}}
    GET  /{v}/batches/{id}, GET /{v}/batches?pageSize=&pageToken=, POST /{v}/batches/{id}:cancel,
    DELETE /{v}/batches/{id}

Every answer is an Operation (`name`, the batch under `metadata`, as the google-genai SDK reads it),
its state spelled `BATCH_STATE_*` or `JOB_STATE_*` (batches alternate: the wire has carried both), its
int64 counts as strings with zeros left out. A batch is PENDING for the first 10% of its duration,
RUNNING until its end, then SUCCEEDED, or CANCELLED, or EXPIRED with no results at all (drawn per
batch with `expired_rate`). Results: inline requests answer inline (`inlinedResponses`, shuffled),
a file's answer in a responses file (gemini_files.py). Per-request errors are google.rpc.Status, an
INVALID_ARGUMENT with the HTTP code 400, a transient one with the gRPC code 13 or the HTTP code 503.
Limits (429 RESOURCE_EXHAUSTED at create): `gemini_max_batches` unfinished batches per project, and
`enqueued_token_limit` (per model) tokens enqueued; the inline body at most 20 MB.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson
from aiohttp import web

from batch_scheduler.simulator.batches import Requests, new_batch
from batch_scheduler.simulator.context import SimContext
from batch_scheduler.simulator.counting import json_tokens
from batch_scheduler.simulator.google.gemini_files import GeminiFiles
from batch_scheduler.simulator.responses import Rejected, json_response, parse_json, read_body
from batch_scheduler.simulator.store import Batch, Outcome, no_gc, output_tokens, rfc3339

PREFIX = "gbatch"
INLINE_MAX_BYTES = 20 * 1000 * 1000
DEFAULT_MAX_OUTPUT = 8192
PENDING_SHARE = 0.1
PAGE_MAX = 100
STATE_PREFIXES = ("BATCH_STATE_", "JOB_STATE_")  # the wire has carried both: batches alternate
_TYPE = "type.googleapis.com/google.ai.generativelanguage.v1main.GenerateContentBatch"
_ERRORS = {Outcome.API_ERROR: {"code": 13, "message": "Internal error encountered."},  # a gRPC code
           Outcome.OVERLOADED: {"code": 503, "message": "The model is overloaded. Please try again later.",
                                "status": "UNAVAILABLE"}}  # an HTTP status


def _item(i: int, obj: Any, inline: bool) -> tuple[str, Any]:
    """(key, GenerateContentRequest) of one request, inline `{request, metadata: {key}}` or a file line."""
    where = f"batch.input_config.requests.requests[{i}]" if inline else f"line {i + 1}"
    if not isinstance(obj, dict):
        raise Rejected("invalid_request_error", f"{where}: expected an object")
    key = (obj.get("metadata") or {}).get("key") if inline and isinstance(obj.get("metadata"), dict) else obj.get("key")
    if not isinstance(key, str) or not key:
        raise Rejected("invalid_request_error", f"{where}: {'metadata.key' if inline else 'key'} is required")
    return key, obj.get("request")


def parse_requests(items: list, model: str, inline: bool) -> Requests:
    reqs = Requests()
    seen: set[str] = set()
    for i, obj in enumerate(items):
        key, request = _item(i, obj, inline)
        if key in seen:
            raise Rejected("invalid_request_error", f"duplicate key '{key}'")
        seen.add(key)
        reqs.custom_ids.append(key)
        contents = request.get("contents") if isinstance(request, dict) else None
        named = request.get("model") if isinstance(request, dict) else None
        if not isinstance(contents, list) or not contents:
            reqs.add_invalid("* GenerateContentRequest.contents: contents is not specified", model)
            continue
        if named is not None and named != f"models/{model}":
            reqs.add_invalid(f"* GenerateContentRequest.model: {named} does not match the batch's models/{model}",
                             model)
            continue
        config = request.get("generationConfig") if isinstance(request.get("generationConfig"), dict) else {}
        limit = config.get("maxOutputTokens")
        reqs.models.append(model)
        reqs.max_tokens.append(limit if type(limit) is int and limit > 0 else DEFAULT_MAX_OUTPUT)
        reqs.in_tokens.append(max(1, json_tokens([request.get("systemInstruction"), contents, request.get("tools")])))
    return reqs


class GeminiApi:
    def __init__(self, ctx: SimContext, files: GeminiFiles):
        self.ctx = ctx
        self.files = files
        files.render = self._render

    def routes(self) -> list[tuple[str, str, str, Any, bool]]:
        bid = "{id:" + PREFIX + "[A-Za-z0-9]+}"
        out = list(self.files.routes())
        for v in ("v1beta", "v1"):
            out += [
                ("POST", f"/{v}/models/{{model}}:batchGenerateContent", "gemini.batches.create", self.create, True),
                ("GET", f"/{v}/batches/{bid}", "gemini.batches.get", self.get, False),
                ("POST", f"/{v}/batches/{bid}:cancel", "gemini.batches.cancel", self.cancel, False),
                ("DELETE", f"/{v}/batches/{bid}", "gemini.batches.delete", self.delete, False),
            ]
        out.append(("GET", "/v1beta/batches", "gemini.batches.list", self.list, False))  # /v1: the server shares it
        return out

    def find(self, request: web.Request, *, ghosts: bool = True) -> Batch:
        batch = self.ctx.store.get(request.match_info["id"], "gemini")
        if batch is None or (ghosts and self.ctx.ghost(batch)):
            raise Rejected("not_found_error", f"Batch batches/{request.match_info['id']} not found.")
        return batch

    # -- create -----------------------------------------------------------------------------------

    async def create(self, request: web.Request) -> web.Response:
        model = request.match_info["model"].removeprefix("models/")
        body = await read_body(request, max(INLINE_MAX_BYTES, 1 << 20) * 2)
        with no_gc():
            doc = parse_json(body)
        batch_doc = doc.get("batch") if isinstance(doc, dict) else None
        if not isinstance(batch_doc, dict):
            raise Rejected("invalid_request_error", "batch: field required")
        name = batch_doc.get("displayName", batch_doc.get("display_name"))
        config = batch_doc.get("inputConfig", batch_doc.get("input_config"))
        if not isinstance(name, str) or not name:
            raise Rejected("invalid_request_error", "batch.display_name: field required")
        if not isinstance(config, dict):
            raise Rejected("invalid_request_error", "batch.input_config: field required")
        items, source = self._inputs(config, len(body))
        self._check_limits(model)
        reqs = parse_requests(items, model, source == "inline")
        if not reqs.custom_ids:
            raise Rejected("invalid_request_error", "batch.input_config: at least one request is required")
        return self._add(reqs, model, name, source)

    def _inputs(self, config: dict, size: int) -> tuple[list, str]:
        requests = config.get("requests")
        if isinstance(requests, dict) and isinstance(requests.get("requests"), list):
            if size > INLINE_MAX_BYTES:
                raise Rejected("invalid_request_error", f"Request payload size exceeds the limit: {INLINE_MAX_BYTES} bytes.")
            return requests["requests"], "inline"
        file_name = config.get("fileName", config.get("file_name"))
        found = self.files.files.get(file_name.removeprefix("files/")) if isinstance(file_name, str) else None
        if found is None or not found.done or found.batch_id is not None:
            raise Rejected("invalid_request_error", f"batch.input_config: file {file_name!r} not found")
        lines = [orjson.loads(x) if x.strip().startswith(b"{") else None for x in bytes(found.data).split(b"\n") if x.strip()]
        return lines, "file"

    def _check_limits(self, model: str) -> None:
        ctx, now = self.ctx, self.ctx.now()
        ctx.check_spend()
        running = [b for b in ctx.store.batches.values() if b.kind == "gemini" and not b.ended(now)]
        if len(running) >= ctx.config.gemini_max_batches:
            ctx.stats["queue_full"] += 1
            raise Rejected("rate_limit_error", f"Batch queue full: at most {ctx.config.gemini_max_batches} "
                                               "concurrent batch jobs per project.")

    def _token_check(self, model: str, tokens: int) -> None:
        ctx, now = self.ctx, self.ctx.now()
        limit = ctx.config.token_limit(model)
        enqueued = sum(b.extra["enqueued_tokens"] for b in ctx.store.batches.values()
                       if b.kind == "gemini" and not b.ended(now) and b.extra["model"] == model)
        if limit is not None and enqueued + tokens > limit:
            ctx.stats["token_limit_failures"] += 1
            raise Rejected("rate_limit_error", f"Enqueued token limit reached for models/{model}: a limit of "
                                               f"{limit:,} enqueued tokens. Try again once running batches end.")

    def _add(self, reqs: Requests, model: str, name: str, source: str) -> web.Response:
        ctx, now = self.ctx, self.ctx.now()
        tokens = sum(reqs.in_tokens)
        self._token_check(model, tokens)
        batch = new_batch(ctx, "gemini", PREFIX, reqs, now, model=model, display_name=name, source=source,
                          enqueued_tokens=tokens, state_prefix=STATE_PREFIXES[ctx.stats["creates"] % 2])
        expired = bool(ctx.config.expired_rate) and ctx.rng.random() < ctx.config.expired_rate
        batch.extra["expired"] = expired  # 48 h passed: no results at all
        batch.outcomes[:] = bytes(Outcome.EXPIRED if expired else (Outcome.SUCCEEDED if o == Outcome.EXPIRED else o)
                                  for o in batch.outcomes)
        ctx.add_batch(batch)
        tokens_by_model = ctx.stats["peak_enqueued_tokens_by_model"]
        tokens_by_model[model] = max(tokens_by_model.get(model, 0), tokens)
        return json_response(self.doc(batch))

    # -- the other calls --------------------------------------------------------------------------

    async def get(self, request: web.Request) -> web.Response:
        self.ctx.stats["retrieves"] += 1
        return json_response(self.doc(self.find(request)))

    async def list(self, request: web.Request) -> web.Response:
        self.ctx.stats["lists"] += 1
        raw = request.query.get("pageSize", "50")
        size = min(PAGE_MAX, int(raw)) if raw.isdigit() and int(raw) > 0 else 50
        ids = [b.id for b in reversed(self.ctx.store.batches.values()) if b.kind == "gemini"]
        token = request.query.get("pageToken")
        start = ids.index(token) if token in ids else 0
        if token and token not in ids:
            raise Rejected("invalid_request_error", "page_token: invalid")
        page = ids[start:start + size]
        doc: dict[str, Any] = {"operations": [self.doc(self.ctx.store.batches[i]) for i in page]}
        if start + size < len(ids):
            doc["nextPageToken"] = ids[start + size]
        return json_response(doc)

    async def cancel(self, request: web.Request) -> web.Response:
        batch = self.find(request, ghosts=False)
        if not batch.extra["expired"]:
            batch.cancel(self.ctx.now(), self.ctx.config.cancel_s)
        self.ctx.stats["cancels"] += 1
        return json_response({})

    async def delete(self, request: web.Request) -> web.Response:
        batch = self.find(request, ghosts=False)
        del self.ctx.store.batches[batch.id]
        self.ctx.stats["deletes"] += 1
        return json_response({})

    # -- answers ----------------------------------------------------------------------------------

    def _state(self, batch: Batch, now: float) -> str:
        if not batch.ended(now):
            pending = now < batch.created_at + PENDING_SHARE * (batch.ends_at - batch.created_at)
            return "PENDING" if pending and batch.cancel_at is None else "RUNNING"
        if batch.extra["expired"]:
            return "EXPIRED"
        return "CANCELLED" if batch.cancel_at is not None else "SUCCEEDED"

    def doc(self, batch: Batch) -> dict[str, Any]:
        now = self.ctx.now()
        state = self._state(batch, now)
        done = batch.processed(now) if state not in ("PENDING", "EXPIRED") else 0
        succeeded = bytes(batch.outcomes[:done]).count(Outcome.SUCCEEDED)
        stats = {"requestCount": str(batch.n), "successfulRequestCount": str(succeeded),
                 "failedRequestCount": str(done - succeeded), "pendingRequestCount": str(batch.n - done)}
        meta: dict[str, Any] = {
            "@type": _TYPE, "name": f"batches/{batch.id}", "model": f"models/{batch.extra['model']}",
            "displayName": batch.extra["display_name"], "createTime": rfc3339(batch.created_wall),
            "updateTime": rfc3339(batch.wall(min(now, batch.ends_at))),
            "batchStats": {k: v for k, v in stats.items() if v != "0"},  # int64 zeros are left out
            "state": batch.extra["state_prefix"] + state,
        }
        if state in ("SUCCEEDED", "CANCELLED", "EXPIRED"):
            meta["endTime"] = rfc3339(batch.wall(batch.ends_at))
        if state in ("SUCCEEDED", "CANCELLED"):
            if batch.extra["source"] == "inline":
                meta["output"] = {"inlinedResponses": {"inlinedResponses": list(self._inline(batch))}}
            else:
                meta["output"] = {"responsesFile": self.files.output_file(batch.id)}
        return {"name": f"batches/{batch.id}", "metadata": meta, "done": state in ("SUCCEEDED", "CANCELLED", "EXPIRED")}

    def _answer(self, batch: Batch, i: int) -> dict[str, Any] | None:
        """Request i's result, `{"response"}` or `{"error"}`; None when it has none (canceled, left out)."""
        outcome = batch.outcomes[i]
        if outcome in (Outcome.CANCELED, Outcome.EXPIRED) or i in batch.missing:
            return None
        if outcome == Outcome.SUCCEEDED:
            cid, prompt = batch.custom_ids[i], batch.in_tokens[i]
            out = output_tokens(cid, batch.max_tokens[i])
            return {"response": {
                "candidates": [{"content": {"parts": [{"text": "answer:" + cid}], "role": "model"},
                                "finishReason": "STOP", "index": 0}],
                "usageMetadata": {"promptTokenCount": prompt, "candidatesTokenCount": out,
                                  "totalTokenCount": prompt + out},
                "modelVersion": batch.extra["model"], "responseId": f"{batch.extra['token']}{i:08x}"}}
        if outcome == Outcome.INVALID:
            return {"error": {"code": 400, "message": batch.invalid.get(i, "Request contains an invalid argument."),
                              "status": "INVALID_ARGUMENT"}}
        return {"error": _ERRORS.get(Outcome(outcome), _ERRORS[Outcome.API_ERROR])}

    def _inline(self, batch: Batch) -> Iterator[dict[str, Any]]:
        order, _ = self.ctx.download_plan(batch.n)
        for i in order:
            answer = self._answer(batch, i)
            if answer is not None:
                yield {**answer, "metadata": {"key": batch.custom_ids[i]}}

    def _render(self, batch_id: str) -> tuple[Iterator[str], int | None] | None:
        batch = self.ctx.store.batches.get(batch_id)
        if batch is None:
            return None
        kept = [i for i in range(batch.n) if self._answer(batch, i) is not None]
        order, cut_at = self.ctx.download_plan(len(kept))
        lines = (orjson.dumps({"key": batch.custom_ids[kept[j]], **(self._answer(batch, kept[j]) or {})}).decode()
                 + "\n" for j in order)
        return lines, cut_at
