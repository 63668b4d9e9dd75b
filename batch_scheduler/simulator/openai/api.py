"""OpenAI Batch (API-NOTES §2): create a batch on an uploaded file, poll, cancel, list.

A batch's life, over its drawn duration D: `validating` (request_counts all 0) for the first 10%,
`in_progress` until 90%, `finalizing` until D, then `completed` (with a batch-level `usage`), or
`expired` when requests expired, `cancelling` -> `cancelled`. It fails (`failed`, with `errors`) at the
end of validating when the input file is invalid, or when its model's enqueued input tokens would pass
the organisation's limit (`token_limit_exceeded`: accepted at create, never a 429). The files (the
input, and the output and error files of an ended batch) are in files.py.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable
from typing import Any

import orjson
from aiohttp import web

from batch_scheduler.simulator.batches import Requests, limit_arg, new_batch
from batch_scheduler.simulator.context import SimContext
from batch_scheduler.simulator.counting import json_tokens
from batch_scheduler.simulator.openai.bodies import ENDPOINTS, completion_tokens, content_problem, model_of
from batch_scheduler.simulator.openai.files import OpenAIFiles, expires_after
from batch_scheduler.simulator.responses import Rejected, json_response, parse_json, read_body
from batch_scheduler.simulator.store import DAY_S, Batch, Outcome, no_gc

MAX_FILE_BYTES = 200 * 1000 * 1000
MAX_ERRORS = 100
LIST_MAX = 100
DEFAULT_MAX_TOKENS = 4096
VALIDATING, FINALIZING = 0.1, 0.9  # shares of a batch's duration
TOKEN_LIMIT_DEFAULT = 2_000_000  # what batch_fail_rate names when no limit is set (gpt-4o-mini, tier 1)
# kept for image/video/response bodies, and what asks a chat answer for JSON of a schema (structured.py)
_ECHOED = ("prompt", "size", "quality", "seconds", "max_output_tokens", "response_format", "tools", "tool_choice")


def token_limit_message(model: str, organization: str, limit: int) -> str:
    """The real API's words (openai-python#2084)."""
    return (f"Enqueued token limit reached for {model} in organization {organization}. Limit: {limit:,} "
            "enqueued tokens. Please try again once some in_progress batches have been completed.")


def line_error(line: int | None, code: str, message: str, param: str | None = None) -> dict[str, Any]:
    return {"code": code, "message": message, "param": param, "line": line}


def same_url(url: Any, endpoint: str) -> bool:
    return url == endpoint


def _line_error(no: int, obj: Any, seen: set[str], model: str | None, endpoint: str,
                url_matches: Callable[[Any, str], bool] | None) -> dict[str, Any] | None:
    """What makes line `no` of an input file invalid (it fails the batch), or None. `url_matches` None:
    lines are `{custom_id, body}` (Together), with no method or url to check."""
    if type(obj) is not dict:
        return line_error(no, "invalid_json_line", "This line is not parseable as valid JSON.")
    cid, body = obj.get("custom_id"), obj.get("body")
    if type(cid) is not str or not cid:
        return line_error(no, "missing_required_parameter", "Missing 'custom_id'.", "custom_id")
    if cid in seen:
        return line_error(no, "duplicate_custom_id",
                          f"The custom_id '{cid}' is a duplicate of another request.", "custom_id")
    if url_matches is not None and obj.get("method") != "POST":
        return line_error(no, "invalid_method", "The method must be POST.", "method")
    if url_matches is not None and not url_matches(obj.get("url"), endpoint):
        return line_error(no, "mismatched_endpoint",
                          f"The url '{obj.get('url')}' does not match the batch endpoint '{endpoint}'.", "url")
    if type(body) is not dict:
        return line_error(no, "missing_required_parameter", "Missing 'body'.", "body")
    if model is not None and model_of(endpoint, body) not in (None, model):
        return line_error(no, "mismatched_model", "All requests in a batch must use the same model.", "body.model")
    return None


def _file_error(data: bytes, max_requests: int) -> tuple[list[bytes], list[dict[str, Any]]]:
    """The non-blank lines of an input file, or the one error that fails it as a whole."""
    if len(data) > MAX_FILE_BYTES:
        return [], [line_error(None, "file_too_large", f"The input file is larger than {MAX_FILE_BYTES:,} bytes.")]
    lines = [line for line in data.split(b"\n") if line.strip()]
    if not lines:
        return [], [line_error(None, "empty_file", "The batch input file is empty.")]
    if len(lines) > max_requests:
        return [], [line_error(None, "too_many_requests",
                               f"The input file has {len(lines):,} requests; at most {max_requests:,} allowed.")]
    return lines, []


def _loads(raw: bytes) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None


def parse_input(data: bytes, endpoint: str, max_requests: int,
                url_matches: Callable[[Any, str], bool] | None = same_url,
                ) -> tuple[Requests, list[dict], dict[int, dict]]:
    """The requests of an input file, or the validation errors that fail the batch; and the body
    fields some answers echo (image size, video prompt, ...), by request."""
    reqs = Requests()
    lines, errors = _file_error(data, max_requests)
    seen: set[str] = set()
    model: str | None = None
    field = ENDPOINTS[endpoint]
    echoed: dict[int, dict] = {}
    for no, raw in enumerate(lines, 1):
        if len(errors) >= MAX_ERRORS:
            break
        obj = _loads(raw)
        error = _line_error(no, obj, seen, model, endpoint, url_matches)
        if error is not None:
            errors.append(error)
        if errors:
            continue
        cid: str = obj["custom_id"]
        body: dict[str, Any] = obj["body"]
        seen.add(cid)
        model = model or model_of(endpoint, body)
        reqs.custom_ids.append(cid)
        problem = content_problem(endpoint, body)
        if problem:
            reqs.add_invalid(problem, model_of(endpoint, body) or "")
            continue
        reqs.models.append(model or "")
        limit = body.get("max_completion_tokens") or body.get("max_tokens") or body.get("max_output_tokens")
        reqs.max_tokens.append(limit or DEFAULT_MAX_TOKENS)
        reqs.in_tokens.append(max(1, json_tokens(body[field])))
        kept = {k: body[k] for k in _ECHOED if k in body}
        if kept:
            echoed[len(reqs.custom_ids) - 1] = kept
    return reqs, errors, echoed


class OpenAIApi:
    """The batches of OpenAI's API; their input and output files are `files`."""

    kind = "openai"  # its batches' kind in the store (an API served under other paths has its own)
    max_requests_field = "openai_max_requests"  # the config field that caps a file's requests
    windows = "'24h'"  # the completion windows create takes, as its refusal names them
    bare_lines = False  # lines are `{custom_id, body}`: no method, no url (Together)
    cursor_param = "after"  # the list's paging parameter (Groq: cursor)

    def __init__(self, ctx: SimContext, files: OpenAIFiles):
        self.ctx = ctx
        self.files = files

    def routes(self) -> list[tuple[str, str, str, Any, bool]]:
        # GET /v1/batches/{id} and POST /v1/batches are shared with the inline proxy: the server routes them.
        return [
            *self.files.routes(),
            ("GET", "/v1/batches", "batches.list", self.list, False),
            ("POST", "/v1/batches/{id}/cancel", "batches.cancel", self.cancel, False),
        ]

    def find(self, request: web.Request, *, ghosts: bool = True) -> Batch:
        batch = self.ctx.store.get(request.match_info["id"], self.kind)
        if batch is None or (ghosts and self.ctx.ghost(batch)):
            raise Rejected("not_found_error", f"No batch found with id '{request.match_info['id']}'.")
        return batch

    def _check_create(self, doc: Any) -> tuple[str, str, Any, int]:
        """(input_file_id, endpoint, metadata, output file TTL) of a create body, or Rejected."""
        if not isinstance(doc, dict):
            raise Rejected("invalid_request_error", "expected a JSON object")
        file_id, endpoint = doc.get("input_file_id"), doc.get("endpoint")
        if not isinstance(file_id, str):
            raise Rejected("invalid_request_error", "Missing required parameter: 'input_file_id'.")
        endpoint = self.endpoint_of(endpoint)
        if endpoint not in ENDPOINTS:
            raise Rejected("invalid_request_error",
                           f"endpoint: must be one of {', '.join(ENDPOINTS)}, not {endpoint!r}")
        if not self.takes_window(doc.get("completion_window")):
            raise Rejected("invalid_request_error", f"completion_window: must be {self.windows}")
        metadata = doc.get("metadata")
        if metadata is not None and not (
                isinstance(metadata, dict) and len(metadata) <= 16
                and all(isinstance(k, str) and len(k) <= 64 and isinstance(v, str) and len(v) <= 512
                        for k, v in metadata.items())):
            raise Rejected("invalid_request_error", "metadata: at most 16 string pairs (keys 64, values 512 chars)")
        return file_id, endpoint, metadata, expires_after(doc.get("output_expires_after"))

    @staticmethod
    def takes_window(window: Any) -> bool:
        return window == "24h"

    def endpoint_of(self, endpoint: Any) -> Any:
        """The create's `endpoint` as ENDPOINTS spell it (an API that also takes other spellings says so)."""
        return endpoint

    url_matches = staticmethod(same_url)  # whether a line's `url` is the batch's endpoint

    def _token_limit(self, model: str | None, tokens: int, now: float) -> list[dict] | None:
        """The `errors` of a batch the enqueued-token limit of its model fails, else None."""
        ctx = self.ctx
        config = ctx.config
        if not model:
            return None
        limit = config.token_limit(model)
        over = limit is not None and ctx.store.enqueued_tokens(now, model, self.kind) + tokens > limit
        if not over and config.batch_fail_rate and ctx.rng.random() < config.batch_fail_rate:
            over, limit = True, limit or TOKEN_LIMIT_DEFAULT
        if not over:
            return None
        ctx.stats["token_limit_failures"] += 1
        return [line_error(None, "token_limit_exceeded", token_limit_message(model, config.organization,
                                                                              limit or TOKEN_LIMIT_DEFAULT))]

    async def create_route(self, request: web.Request) -> web.Response:
        """A create on paths of its own (`POST /v1/batches` is shared: server.py routes it)."""
        body = await read_body(request, self.ctx.config.max_body_bytes)
        with no_gc():
            return self.create(parse_json(body))

    def create(self, doc: Any) -> web.Response:
        return json_response(self.created(self.make(doc)))

    def created(self, batch: Batch) -> Any:
        """The answer to the create that made `batch`."""
        return self.doc(batch, fresh=True)

    def make(self, doc: Any) -> Batch:
        """The batch a create body asks for (Rejected when it cannot be made)."""
        ctx = self.ctx
        file_id, endpoint, metadata, output_ttl = self._check_create(doc)
        record = self.files.records.get(file_id)
        if record is None or record.data is None:
            raise Rejected("not_found_error", f"No such File object: {file_id}")
        ctx.check_spend()
        with no_gc():
            reqs, errors, echoed = parse_input(record.data, endpoint, getattr(ctx.config, self.max_requests_field),
                                               None if self.bare_lines else self.url_matches)
        now = ctx.now()
        model = next((m for m in reqs.models if m), None)
        tokens = sum(reqs.in_tokens)
        errors = errors or self._token_limit(model, tokens, now) or []
        if errors:
            reqs, tokens, echoed = Requests(), 0, {}
        batch = new_batch(ctx, self.kind, "batch_", reqs, now, endpoint=endpoint, input_file_id=file_id,
                          metadata=metadata, errors=errors or None, model=model, enqueued_tokens=tokens,
                          bodies=echoed, output_ttl_s=output_ttl, invalid_json_rate=ctx.config.invalid_json_rate)
        batch.extra["duration"] = duration = batch.ends_at - now
        if errors:
            batch.ends_at = now + VALIDATING * duration
        ctx.add_batch(batch)
        return batch

    async def retrieve(self, request: web.Request) -> web.Response:
        self.ctx.stats["retrieves"] += 1
        return json_response(self.doc(self.find(request)))

    async def list(self, request: web.Request) -> web.Response:
        self.ctx.stats["lists"] += 1
        cursor = self.cursor_param
        page = self.ctx.store.page(self.kind, limit_arg(request, LIST_MAX), request.query.get(cursor))
        if page is None:
            raise Rejected("invalid_request_error", f"{cursor}: no such batch")
        batches, more = page
        return json_response(self.page_doc([self.doc(b) for b in batches], more))

    def page_doc(self, data: builtins.list[dict[str, Any]], more: bool) -> Any:
        """A list answer around one page of batch objects."""
        return {"object": "list", "data": data, "first_id": data[0]["id"] if data else None,
                "last_id": data[-1]["id"] if data else None, "has_more": more}

    async def cancel(self, request: web.Request) -> web.Response:
        batch = self.find(request, ghosts=False)
        canceling = batch.cancel(self.ctx.now(), self.ctx.config.cancel_s)
        self.ctx.stats["cancels"] += 1
        return json_response(self.doc(batch, cancelling=canceling))

    def usage(self, batch: Batch, ended: bool) -> dict[str, Any]:
        """Batch-level usage: the tokens of its succeeded requests, once it has ended (zeros before)."""
        usage = batch.extra.get("usage")
        if usage is not None:
            return usage
        prompt = completion = 0
        if ended:
            endpoint, outcomes = batch.extra["endpoint"], batch.outcomes
            for i in range(batch.n):
                if outcomes[i] == Outcome.SUCCEEDED:
                    prompt += batch.in_tokens[i]
                    completion += completion_tokens(endpoint, batch, i)
        usage = {"input_tokens": prompt, "input_tokens_details": {"cached_tokens": 0},
                 "output_tokens": completion, "output_tokens_details": {"reasoning_tokens": 0},
                 "total_tokens": prompt + completion}
        if ended:
            batch.extra["usage"] = usage
        return usage

    def doc(self, batch: Batch, *, fresh: bool = False, cancelling: bool = False) -> dict[str, Any]:
        now = self.ctx.now()
        created = int(batch.created_wall)
        duration = batch.extra["duration"]
        errors = batch.extra.get("errors")
        ended = batch.ended(now) and not fresh and not cancelling
        doc: dict[str, Any] = {
            "id": batch.id, "object": "batch", "endpoint": batch.extra["endpoint"], "errors": None,
            "input_file_id": batch.extra["input_file_id"], "completion_window": "24h", "status": "validating",
            "output_file_id": None, "error_file_id": None, "created_at": created, "in_progress_at": None,
            "expires_at": created + int(DAY_S), "finalizing_at": None, "completed_at": None, "failed_at": None,
            "expired_at": None, "cancelling_at": None, "cancelled_at": None,
            "request_counts": {"total": 0, "completed": 0, "failed": 0},
            "metadata": batch.extra["metadata"], "model": batch.extra["model"], "usage": None,
        }
        validated_at = batch.created_at + VALIDATING * duration
        if fresh or (errors and not ended) or (not errors and now < validated_at and batch.cancel_at is None):
            return doc
        if errors:
            doc.update(status="failed", failed_at=int(batch.wall(batch.ends_at)),
                       errors={"object": "list", "data": errors})
            return doc
        doc["in_progress_at"] = int(batch.wall(validated_at))
        if batch.cancel_at is not None:
            doc["cancelling_at"] = int(batch.wall(batch.cancel_at))
        done = batch.processed(now)
        succeeded = bytes(batch.outcomes[:done]).count(Outcome.SUCCEEDED)
        doc["request_counts"] = {"total": batch.n, "completed": succeeded, "failed": done - succeeded}
        doc["usage"] = self.usage(batch, ended)
        if not ended:
            finalizing_at = batch.created_at + FINALIZING * duration
            if batch.cancel_at is not None:
                doc["status"] = "cancelling"
            elif now >= finalizing_at:
                doc.update(status="finalizing", finalizing_at=int(batch.wall(finalizing_at)))
            else:
                doc["status"] = "in_progress"
            return doc
        end = int(batch.wall(batch.ends_at))
        doc["output_file_id"], doc["error_file_id"] = self.files.ensure_files(batch)
        if batch.cancel_at is not None:
            doc.update(status="cancelled", cancelled_at=end)
        elif Outcome.EXPIRED in batch.outcomes:
            doc.update(status="expired", expired_at=end)
        else:
            doc.update(status="completed", finalizing_at=int(batch.wall(batch.created_at + FINALIZING * duration)),
                       completed_at=end)
        return doc
