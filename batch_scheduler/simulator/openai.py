"""OpenAI Batch (API-NOTES §2): upload a JSONL file, create a batch on it, poll, download files.

A batch's life, over its drawn duration D: `validating` (request_counts all 0) for the first 10%,
`in_progress` until 90%, `finalizing` until D, then `completed` (with a batch-level `usage`), or
`expired` when requests expired, `cancelling` -> `cancelled`. It fails (`failed`, with `errors`) at the
end of validating when the input file is invalid, or when its model's enqueued input tokens would pass
the organisation's limit (`token_limit_exceeded`: accepted at create, never a 429). Output and error
files are not stored: their lines are rendered from the batch on each download. Files expire 30 days
after creation unless `expires_after` says otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web

from batch_scheduler.simulator.batches import Requests, limit_arg, new_batch
from batch_scheduler.simulator.counting import json_tokens
from batch_scheduler.simulator.openai_bodies import (
    ENDPOINTS,
    completion_tokens,
    content_problem,
    model_of,
    response_body,
)
from batch_scheduler.simulator.responses import (
    CHUNK_BYTES,
    Rejected,
    json_response,
    stream_blocks,
    stream_jsonl,
)
from batch_scheduler.simulator.store import DAY_S, Batch, Outcome, new_id, no_gc

if TYPE_CHECKING:
    from batch_scheduler.simulator.server import Simulator

MAX_FILE_BYTES = 200 * 1000 * 1000
MAX_ERRORS = 100
LIST_MAX = 100
DEFAULT_MAX_TOKENS = 4096
FILE_TTL_S = 30 * 24 * 3600
VALIDATING, FINALIZING = 0.1, 0.9  # shares of a batch's duration
TOKEN_LIMIT_DEFAULT = 2_000_000  # what batch_fail_rate names when no limit is set (gpt-4o-mini, tier 1)
_ECHOED = ("prompt", "size", "quality", "seconds", "max_output_tokens")  # kept for image/video/response bodies
_SERVER_ERROR = {"error": {"message": "The server had an error while processing your request. Sorry about that!",
                           "type": "server_error", "param": None, "code": None}}
_EXPIRED = {"code": "batch_expired",
            "message": "This request could not be executed before the completion window expired."}
_CANCELLED = {"code": "batch_cancelled",
              "message": "This request was not executed because the batch was cancelled."}
_TIMEOUT = {"code": "request_timeout", "message": "The request timed out: the underlying call to the model "
                                                  "did not finish in time. Please try again."}


def token_limit_message(model: str, organization: str, limit: int) -> str:
    """The real API's words (openai-python#2084)."""
    return (f"Enqueued token limit reached for {model} in organization {organization}. Limit: {limit:,} "
            "enqueued tokens. Please try again once some in_progress batches have been completed.")


@dataclass(eq=False, slots=True)
class FileRecord:
    id: str
    purpose: str
    filename: str
    created_at: int
    data: bytes | None = None  # uploaded files
    batch_id: str | None = None  # generated files: rendered from this batch
    which: str = ""  # "output" | "error"
    size: int | None = None
    expires_at: int | None = None

    def doc(self) -> dict[str, Any]:
        return {"id": self.id, "object": "file", "bytes": self.size, "created_at": self.created_at,
                "filename": self.filename, "purpose": self.purpose, "status": "processed",
                "expires_at": self.expires_at, "status_details": None}


def line_error(line: int | None, code: str, message: str, param: str | None = None) -> dict[str, Any]:
    return {"code": code, "message": message, "param": param, "line": line}


def parse_input(data: bytes, endpoint: str, max_requests: int) -> tuple[Requests, list[dict], dict[int, dict]]:
    """The requests of an input file, or the validation errors that fail the batch; and the body
    fields some answers echo (image size, video prompt, ...), by request."""
    reqs = Requests()
    if len(data) > MAX_FILE_BYTES:
        return reqs, [line_error(None, "file_too_large",
                                 f"The input file is larger than {MAX_FILE_BYTES:,} bytes.")], {}
    lines = [line for line in data.split(b"\n") if line.strip()]
    if not lines:
        return reqs, [line_error(None, "empty_file", "The batch input file is empty.")], {}
    if len(lines) > max_requests:
        return reqs, [line_error(None, "too_many_requests",
                                 f"The input file has {len(lines):,} requests; at most {max_requests:,} allowed.")], {}
    errors: list[dict] = []
    seen: set[str] = set()
    model: str | None = None
    field = ENDPOINTS[endpoint]
    echoed: dict[int, dict] = {}
    for no, raw in enumerate(lines, 1):
        if len(errors) >= MAX_ERRORS:
            break
        try:
            obj = orjson.loads(raw)
        except orjson.JSONDecodeError:
            obj = None
        if type(obj) is not dict:
            errors.append(line_error(no, "invalid_json_line", "This line is not parseable as valid JSON."))
            continue
        cid, body = obj.get("custom_id"), obj.get("body")
        if type(cid) is not str or not cid:
            errors.append(line_error(no, "missing_required_parameter", "Missing 'custom_id'.", "custom_id"))
        elif cid in seen:
            errors.append(line_error(no, "duplicate_custom_id",
                                     f"The custom_id '{cid}' is a duplicate of another request.", "custom_id"))
        elif obj.get("method") != "POST":
            errors.append(line_error(no, "invalid_method", "The method must be POST.", "method"))
        elif obj.get("url") != endpoint:
            errors.append(line_error(no, "mismatched_endpoint",
                                     f"The url '{obj.get('url')}' does not match the batch endpoint '{endpoint}'.",
                                     "url"))
        elif type(body) is not dict:
            errors.append(line_error(no, "missing_required_parameter", "Missing 'body'.", "body"))
        elif model is not None and model_of(endpoint, body) not in (None, model):
            errors.append(line_error(no, "mismatched_model",
                                     "All requests in a batch must use the same model.", "body.model"))
        if errors:
            continue
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


def file_lines(batch: Batch, which: str, order: list[int] | range):
    """Lines of a batch's output file (succeeded) or error file (everything else), in `order`;
    the requests the batch left out of its results are in neither."""
    endpoint, token = batch.extra["endpoint"], batch.extra["token"]
    created = int(batch.wall(batch.ends_at))
    outcomes, missing, dumps = batch.outcomes, batch.missing, orjson.dumps
    want_output = which == "output"
    for i in order:
        outcome = outcomes[i]
        if (outcome == Outcome.SUCCEEDED) != want_output or i in missing:
            continue
        response: dict[str, Any] | None = None
        error: dict[str, Any] | None = None
        if outcome == Outcome.SUCCEEDED:
            response = {"status_code": 200, "request_id": f"req_{token}{i:08x}",
                        "body": response_body(endpoint, batch, i, created)}
        elif outcome == Outcome.INVALID:
            message = batch.invalid.get(i, "simulated invalid request")
            response = {"status_code": 400, "request_id": f"req_{token}{i:08x}",
                        "body": {"error": {"message": message, "type": "invalid_request_error",
                                           "param": None, "code": None}}}
        elif outcome == Outcome.EXPIRED:
            error = _EXPIRED
        elif outcome == Outcome.CANCELED:
            error = _CANCELLED
        elif outcome == Outcome.REQUEST_TIMEOUT:
            error = _TIMEOUT
        else:
            response = {"status_code": 500, "request_id": f"req_{token}{i:08x}", "body": _SERVER_ERROR}
        line = {"id": f"batch_req_{token}{i:08x}", "custom_id": batch.custom_ids[i], "response": response,
                "error": error}
        yield dumps(line).decode() + "\n"


def file_line_counts(batch: Batch) -> tuple[int, int]:
    """(lines of the output file, lines of the error file)."""
    kept = bytearray(batch.outcomes)
    for i in batch.missing:
        kept[i] = 255
    succeeded = kept.count(Outcome.SUCCEEDED)
    return succeeded, batch.n - len(batch.missing) - succeeded


def expires_after(value: Any, default_s: int = FILE_TTL_S) -> int:
    """Seconds to keep a file: `{"anchor": "created_at", "seconds": 3600..2592000}` or the default."""
    if value is None:
        return default_s
    seconds = value.get("seconds") if isinstance(value, dict) else None
    if not isinstance(value, dict) or value.get("anchor") != "created_at" or type(seconds) is not int \
            or not 3600 <= seconds <= FILE_TTL_S:
        raise Rejected("invalid_request_error",
                       "expires_after: anchor must be 'created_at' and seconds between 3600 and 2592000")
    return seconds


class OpenAIApi:
    def __init__(self, sim: Simulator):
        self.sim = sim
        self.files: dict[str, FileRecord] = {}

    def routes(self) -> list[tuple[str, str, str, Any, bool]]:
        return [
            ("POST", "/v1/files", "files.upload", self.upload, False),
            ("GET", "/v1/files/{id}", "files.retrieve", self.file, False),
            ("GET", "/v1/files/{id}/content", "files.content", self.content, False),
            ("DELETE", "/v1/files/{id}", "files.delete", self.delete_file, False),
            ("GET", "/v1/batches", "batches.list", self.list, False),
            ("GET", "/v1/batches/{id}", "batches.retrieve", self.retrieve, False),
            ("POST", "/v1/batches/{id}/cancel", "batches.cancel", self.cancel, False),
        ]

    # -- files --------------------------------------------------------------------------------------

    def find_file(self, request: web.Request, *, ghosts: bool = True) -> FileRecord:
        record = self.files.get(request.match_info["id"])
        batch = self.sim.store.batches.get(record.batch_id) if record is not None and record.batch_id else None
        if record is None or (ghosts and batch is not None and self.sim.ghost(batch)):
            raise Rejected("not_found_error", f"No such File object: {request.match_info['id']}")
        return record

    async def upload(self, request: web.Request) -> web.Response:
        if not request.content_type.startswith("multipart/"):
            raise Rejected("invalid_request_error", "expected a multipart/form-data body with purpose and file")
        purpose, filename, data = None, "upload.jsonl", None
        expiry: dict[str, Any] = {}
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            if part.name == "purpose":
                purpose = await part.text()
            elif part.name == "file":
                filename = part.filename or filename
                data = bytes(await part.read())
            elif part.name in ("expires_after[anchor]", "expires_after[seconds]"):
                text = await part.text()
                expiry[part.name[14:-1]] = int(text) if part.name.endswith("[seconds]") and text.isdigit() else text
        if data is None:
            raise Rejected("invalid_request_error", "Missing required parameter: 'file'.")
        if purpose != "batch":
            raise Rejected("invalid_request_error", "purpose: the simulator only takes purpose 'batch'")
        created = int(self.sim.wall_time())
        record = FileRecord(id=new_id("file-"), purpose="batch", filename=filename, created_at=created,
                            data=data, size=len(data), expires_at=created + expires_after(expiry or None))
        self.files[record.id] = record
        self.sim.stats["uploads"] += 1
        return json_response(record.doc())

    def generated_size(self, record: FileRecord) -> int:
        if record.size is None:
            batch = self.sim.store.batches[record.batch_id or ""]
            record.size = sum(len(line.encode()) for line in file_lines(batch, record.which, range(batch.n)))
        return record.size

    async def file(self, request: web.Request) -> web.Response:
        record = self.find_file(request)
        if record.data is None:
            self.generated_size(record)
        return json_response(record.doc())

    async def content(self, request: web.Request) -> web.StreamResponse:
        record = self.find_file(request)
        if record.data is not None:
            data = record.data
            blocks = (data[i:i + CHUNK_BYTES] for i in range(0, len(data), CHUNK_BYTES))
            return await stream_blocks(request, blocks)
        batch = self.sim.store.batches[record.batch_id or ""]
        output, errors = file_line_counts(batch)
        order, cut_at = self.sim.download_plan(batch.n, output if record.which == "output" else errors)
        return await stream_jsonl(request, file_lines(batch, record.which, order), cut_at=cut_at,
                                  content_type="application/octet-stream")

    async def delete_file(self, request: web.Request) -> web.Response:
        record = self.find_file(request, ghosts=False)
        del self.files[record.id]
        return json_response({"id": record.id, "object": "file", "deleted": True})

    # -- batches ------------------------------------------------------------------------------------

    def find(self, request: web.Request, *, ghosts: bool = True) -> Batch:
        batch = self.sim.store.get(request.match_info["id"], "openai")
        if batch is None or (ghosts and self.sim.ghost(batch)):
            raise Rejected("not_found_error", f"No batch found with id '{request.match_info['id']}'.")
        return batch

    def _check_create(self, doc: Any) -> tuple[str, str, Any, int]:
        """(input_file_id, endpoint, metadata, output file TTL) of a create body, or Rejected."""
        if not isinstance(doc, dict):
            raise Rejected("invalid_request_error", "expected a JSON object")
        file_id, endpoint = doc.get("input_file_id"), doc.get("endpoint")
        if not isinstance(file_id, str):
            raise Rejected("invalid_request_error", "Missing required parameter: 'input_file_id'.")
        if endpoint not in ENDPOINTS:
            raise Rejected("invalid_request_error",
                           f"endpoint: must be one of {', '.join(ENDPOINTS)}, not {endpoint!r}")
        if doc.get("completion_window") != "24h":
            raise Rejected("invalid_request_error", "completion_window: must be '24h'")
        metadata = doc.get("metadata")
        if metadata is not None and not (
                isinstance(metadata, dict) and len(metadata) <= 16
                and all(isinstance(k, str) and len(k) <= 64 and isinstance(v, str) and len(v) <= 512
                        for k, v in metadata.items())):
            raise Rejected("invalid_request_error", "metadata: at most 16 string pairs (keys 64, values 512 chars)")
        return file_id, endpoint, metadata, expires_after(doc.get("output_expires_after"))

    def _token_limit(self, model: str | None, tokens: int, now: float) -> list[dict] | None:
        """The `errors` of a batch the enqueued-token limit of its model fails, else None."""
        sim = self.sim
        config = sim.config
        if not model:
            return None
        limit = config.token_limit(model)
        over = limit is not None and sim.store.enqueued_tokens(now, model) + tokens > limit
        if not over and config.batch_fail_rate and sim.rng.random() < config.batch_fail_rate:
            over, limit = True, limit or TOKEN_LIMIT_DEFAULT
        if not over:
            return None
        sim.stats["token_limit_failures"] += 1
        return [line_error(None, "token_limit_exceeded", token_limit_message(model, config.organization,
                                                                              limit or TOKEN_LIMIT_DEFAULT))]

    def create(self, doc: Any) -> web.Response:
        sim = self.sim
        file_id, endpoint, metadata, output_ttl = self._check_create(doc)
        record = self.files.get(file_id)
        if record is None or record.data is None:
            raise Rejected("not_found_error", f"No such File object: {file_id}")
        sim.check_spend()
        with no_gc():
            reqs, errors, echoed = parse_input(record.data, endpoint, sim.config.openai_max_requests)
        now = sim.now()
        model = next((m for m in reqs.models if m), None)
        tokens = sum(reqs.in_tokens)
        errors = errors or self._token_limit(model, tokens, now) or []
        if errors:
            reqs, tokens, echoed = Requests(), 0, {}
        batch = new_batch(sim, "openai", "batch_", reqs, now, endpoint=endpoint, input_file_id=file_id,
                          metadata=metadata, errors=errors or None, model=model, enqueued_tokens=tokens,
                          bodies=echoed, output_ttl_s=output_ttl)
        batch.extra["duration"] = duration = batch.ends_at - now
        if errors:
            batch.ends_at = now + VALIDATING * duration
        sim.add_batch(batch)
        return json_response(self.doc(batch, fresh=True))

    async def retrieve(self, request: web.Request) -> web.Response:
        if request.match_info["id"].startswith("ibatch_"):
            return await self.sim.inline.retrieve(request)
        self.sim.stats["retrieves"] += 1
        return json_response(self.doc(self.find(request)))

    async def list(self, request: web.Request) -> web.Response:
        self.sim.stats["lists"] += 1
        page = self.sim.store.page("openai", limit_arg(request, LIST_MAX), request.query.get("after"))
        if page is None:
            raise Rejected("invalid_request_error", "after: no such batch")
        batches, more = page
        data = [self.doc(b) for b in batches]
        return json_response({"object": "list", "data": data, "first_id": data[0]["id"] if data else None,
                              "last_id": data[-1]["id"] if data else None, "has_more": more})

    async def cancel(self, request: web.Request) -> web.Response:
        batch = self.find(request, ghosts=False)
        canceling = batch.cancel(self.sim.now(), self.sim.config.cancel_s)
        self.sim.stats["cancels"] += 1
        return json_response(self.doc(batch, cancelling=canceling))

    def ensure_files(self, batch: Batch) -> tuple[str | None, str | None]:
        """Output and error file ids of an ended batch (None when that file would be empty)."""
        if "files" not in batch.extra:
            ids: list[str | None] = []
            created = int(batch.wall(batch.ends_at))
            for which, lines in zip(("output", "error"), file_line_counts(batch), strict=True):
                if not lines:
                    ids.append(None)
                    continue
                record = FileRecord(id=new_id("file-"), purpose="batch_output",
                                    filename=f"{batch.id}_{which}.jsonl", created_at=created,
                                    batch_id=batch.id, which=which, expires_at=created + batch.extra["output_ttl_s"])
                self.files[record.id] = record
                ids.append(record.id)
            batch.extra["files"] = tuple(ids)
        return batch.extra["files"]

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
        now = self.sim.now()
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
        doc["output_file_id"], doc["error_file_id"] = self.ensure_files(batch)
        if batch.cancel_at is not None:
            doc.update(status="cancelled", cancelled_at=end)
        elif Outcome.EXPIRED in batch.outcomes:
            doc.update(status="expired", expired_at=end)
        else:
            doc.update(status="completed", finalizing_at=int(batch.wall(batch.created_at + FINALIZING * duration)),
                       completed_at=end)
        return doc
