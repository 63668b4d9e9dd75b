"""OpenAI Batch (API-NOTES §2): upload a JSONL file, create a batch on it, poll, download files.

Statuses: `validating` (the create answer) -> `in_progress` -> `completed`, or `failed` when the input
file is invalid (with `errors`), `cancelling` -> `cancelled`, `expired` when requests expired.
Output and error files are not stored: their lines are rendered from the batch on each download.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web

from batch_scheduler.simulator.anthropic import Requests, limit_arg, new_batch
from batch_scheduler.simulator.responses import (
    CHUNK_BYTES,
    Rejected,
    json_response,
    stream_blocks,
    stream_jsonl,
)
from batch_scheduler.simulator.store import DAY_S, Batch, Outcome, new_id, no_gc, output_tokens

if TYPE_CHECKING:
    from batch_scheduler.simulator.server import Simulator

ENDPOINTS = {"/v1/chat/completions": "messages", "/v1/responses": "input", "/v1/embeddings": "input",
             "/v1/completions": "prompt"}
MAX_FILE_BYTES = 200 * 1000 * 1000
MAX_ERRORS = 100
LIST_MAX = 100
DEFAULT_MAX_TOKENS = 4096
_SERVER_ERROR = {"error": {"message": "The server had an error while processing your request. Sorry about that!",
                           "type": "server_error", "param": None, "code": None}}
_EXPIRED = {"code": "batch_expired",
            "message": "This request could not be executed before the completion window expired."}
_CANCELLED = {"code": "batch_cancelled",
              "message": "This request was not executed because the batch was cancelled."}


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

    def doc(self) -> dict[str, Any]:
        return {"id": self.id, "object": "file", "bytes": self.size, "created_at": self.created_at,
                "filename": self.filename, "purpose": self.purpose, "status": "processed",
                "expires_at": None, "status_details": None}


def content_problem(endpoint: str, body: dict) -> str | None:
    """What the API would answer (400) to one request of the file; None when it runs."""
    if not isinstance(body.get("model"), str) or not body["model"]:
        return "you must provide a model parameter"
    field = ENDPOINTS[endpoint]
    value = body.get(field)
    if value is None or value == [] or value == "":
        return f"Missing required parameter: '{field}'."
    for name in ("max_tokens", "max_completion_tokens", "max_output_tokens"):
        limit = body.get(name)
        if limit is not None and (type(limit) is not int or limit < 1):
            return f"Invalid '{name}': integer below minimum value."
    return None


def line_error(line: int | None, code: str, message: str, param: str | None = None) -> dict[str, Any]:
    return {"code": code, "message": message, "param": param, "line": line}


def parse_input(data: bytes, endpoint: str, max_requests: int) -> tuple[Requests, list[dict]]:
    """The requests of an input file, or the validation errors that fail the batch."""
    reqs = Requests()
    if len(data) > MAX_FILE_BYTES:
        return reqs, [line_error(None, "file_too_large", f"The input file is larger than {MAX_FILE_BYTES:,} bytes.")]
    lines = [line for line in data.split(b"\n") if line.strip()]
    if not lines:
        return reqs, [line_error(None, "empty_file", "The batch input file is empty.")]
    if len(lines) > max_requests:
        return reqs, [line_error(None, "too_many_requests",
                                 f"The input file has {len(lines):,} requests; at most {max_requests:,} allowed.")]
    errors: list[dict] = []
    seen: set[str] = set()
    model: str | None = None
    field = ENDPOINTS[endpoint]
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
        elif model is not None and isinstance(body.get("model"), str) and body["model"] != model:
            errors.append(line_error(no, "mismatched_model",
                                     "All requests in a batch must use the same model.", "body.model"))
        if errors:
            continue
        seen.add(cid)
        model = model or (body.get("model") if isinstance(body.get("model"), str) else None)
        i = len(reqs.custom_ids)
        reqs.custom_ids.append(cid)
        problem = content_problem(endpoint, body)
        if problem:
            reqs.invalid[i] = problem
            reqs.models.append(body.get("model") if isinstance(body.get("model"), str) else "")
            reqs.max_tokens.append(0)
            reqs.in_tokens.append(0)
            continue
        reqs.models.append(model or "")
        limit = body.get("max_completion_tokens") or body.get("max_tokens") or body.get("max_output_tokens")
        reqs.max_tokens.append(limit or DEFAULT_MAX_TOKENS)
        reqs.in_tokens.append(max(1, len(orjson.dumps(body[field])) // 4))
    return reqs, errors


def response_body(endpoint: str, batch: Batch, i: int, created: int) -> dict[str, Any]:
    cid, model, token = batch.custom_ids[i], batch.models[i], batch.extra["token"]
    prompt = batch.in_tokens[i]
    completion = output_tokens(cid, batch.max_tokens[i])
    answer = "answer:" + cid
    if endpoint == "/v1/chat/completions":
        return {"id": f"chatcmpl-{token}{i:08x}", "object": "chat.completion", "created": created, "model": model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": answer, "refusal": None,
                                                     "annotations": []},
                             "logprobs": None, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                          "total_tokens": prompt + completion},
                "system_fingerprint": None}
    if endpoint == "/v1/completions":
        return {"id": f"cmpl-{token}{i:08x}", "object": "text_completion", "created": created, "model": model,
                "choices": [{"text": answer, "index": 0, "logprobs": None, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                          "total_tokens": prompt + completion}}
    if endpoint == "/v1/embeddings":
        return {"object": "list", "model": model,
                "data": [{"object": "embedding", "index": 0, "embedding": [0.0] * 8}],
                "usage": {"prompt_tokens": prompt, "total_tokens": prompt}}
    return {"id": f"resp_{token}{i:08x}", "object": "response", "created_at": created, "status": "completed",
            "model": model,
            "output": [{"type": "message", "id": f"msg_{token}{i:08x}", "status": "completed", "role": "assistant",
                        "content": [{"type": "output_text", "text": answer, "annotations": []}]}],
            "usage": {"input_tokens": prompt, "output_tokens": completion, "total_tokens": prompt + completion}}


def file_lines(batch: Batch, which: str, order: list[int]):
    """Lines of a batch's output file (succeeded) or error file (everything else), in `order`."""
    endpoint, token = batch.extra["endpoint"], batch.extra["token"]
    created = int(batch.wall(batch.ends_at))
    outcomes, dumps = batch.outcomes, orjson.dumps
    want_output = which == "output"
    for i in order:
        outcome = outcomes[i]
        if (outcome == Outcome.SUCCEEDED) != want_output:
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
        else:
            response = {"status_code": 500, "request_id": f"req_{token}{i:08x}", "body": _SERVER_ERROR}
        line = {"id": f"batch_req_{token}{i:08x}", "custom_id": batch.custom_ids[i], "response": response,
                "error": error}
        yield dumps(line).decode() + "\n"


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

    def find_file(self, request: web.Request) -> FileRecord:
        record = self.files.get(request.match_info["id"])
        if record is None:
            raise Rejected("not_found_error", f"No such File object: {request.match_info['id']}")
        return record

    async def upload(self, request: web.Request) -> web.Response:
        if not request.content_type.startswith("multipart/"):
            raise Rejected("invalid_request_error", "expected a multipart/form-data body with purpose and file")
        purpose, filename, data = None, "upload.jsonl", None
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            if part.name == "purpose":
                purpose = await part.text()
            elif part.name == "file":
                filename = part.filename or filename
                data = bytes(await part.read())
        if data is None:
            raise Rejected("invalid_request_error", "Missing required parameter: 'file'.")
        if purpose != "batch":
            raise Rejected("invalid_request_error", "purpose: the simulator only takes purpose 'batch'")
        record = FileRecord(id=new_id("file-"), purpose="batch", filename=filename,
                            created_at=int(self.sim.wall_time()), data=data, size=len(data))
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
        counts = batch.counts()
        succeeded = counts[Outcome.SUCCEEDED]
        order, cut_at = self.sim.download_plan(batch.n, succeeded if record.which == "output" else batch.n - succeeded)
        return await stream_jsonl(request, file_lines(batch, record.which, order), cut_at=cut_at,
                                  content_type="application/octet-stream")

    async def delete_file(self, request: web.Request) -> web.Response:
        record = self.find_file(request)
        del self.files[record.id]
        return json_response({"id": record.id, "object": "file", "deleted": True})

    # -- batches ------------------------------------------------------------------------------------

    def find(self, request: web.Request) -> Batch:
        batch = self.sim.store.get(request.match_info["id"], "openai")
        if batch is None:
            raise Rejected("not_found_error", f"No batch found with id '{request.match_info['id']}'.")
        return batch

    def create(self, doc: Any) -> web.Response:
        sim = self.sim
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
        record = self.files.get(file_id)
        if record is None or record.data is None:
            raise Rejected("not_found_error", f"No such File object: {file_id}")
        with no_gc():
            reqs, errors = parse_input(record.data, endpoint, sim.config.openai_max_requests)
        if not errors and sim.config.batch_fail_rate and sim.rng.random() < sim.config.batch_fail_rate:
            errors = [line_error(None, "token_limit_exceeded", "Enqueued token limit reached for this model. "
                                 "Please try again once some in_progress batches have been completed.")]
        if errors:
            reqs = Requests()
        now = sim.check_queue(len(reqs.custom_ids))
        batch = new_batch(sim, "openai", "batch_", reqs, now, endpoint=endpoint, input_file_id=file_id,
                          metadata=metadata, errors=errors or None)
        if errors:
            batch.ends_at = now
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
        batch = self.find(request)
        canceling = batch.cancel(self.sim.now(), self.sim.config.cancel_s)
        self.sim.stats["cancels"] += 1
        return json_response(self.doc(batch, cancelling=canceling))

    def ensure_files(self, batch: Batch) -> tuple[str | None, str | None]:
        """Output and error file ids of an ended batch (None when that file would be empty)."""
        if "files" not in batch.extra:
            counts = batch.counts()
            succeeded = counts[Outcome.SUCCEEDED]
            ids = []
            for which, lines in (("output", succeeded), ("error", batch.n - succeeded)):
                if not lines:
                    ids.append(None)
                    continue
                record = FileRecord(id=new_id("file-"), purpose="batch_output",
                                    filename=f"{batch.id}_{which}.jsonl", created_at=int(batch.wall(batch.ends_at)),
                                    batch_id=batch.id, which=which)
                self.files[record.id] = record
                ids.append(record.id)
            batch.extra["files"] = tuple(ids)
        return batch.extra["files"]

    def doc(self, batch: Batch, *, fresh: bool = False, cancelling: bool = False) -> dict[str, Any]:
        now = self.sim.now()
        created = int(batch.created_wall)
        errors = batch.extra.get("errors")
        ended = batch.ended(now) and not fresh and not cancelling
        doc: dict[str, Any] = {
            "id": batch.id, "object": "batch", "endpoint": batch.extra["endpoint"], "errors": None,
            "input_file_id": batch.extra["input_file_id"], "completion_window": "24h", "status": "validating",
            "output_file_id": None, "error_file_id": None, "created_at": created, "in_progress_at": None,
            "expires_at": created + int(DAY_S), "finalizing_at": None, "completed_at": None, "failed_at": None,
            "expired_at": None, "cancelling_at": None, "cancelled_at": None,
            "request_counts": {"total": batch.n, "completed": 0, "failed": 0},
            "metadata": batch.extra["metadata"], "model": batch.models[0] if batch.models else None,
        }
        if fresh:
            return doc
        if errors:
            doc.update(status="failed", failed_at=created, errors={"object": "list", "data": errors})
            return doc
        doc["in_progress_at"] = created
        if batch.cancel_at is not None:
            doc["cancelling_at"] = int(batch.wall(batch.cancel_at))
        done = batch.processed(now)
        succeeded = bytes(batch.outcomes[:done]).count(Outcome.SUCCEEDED)
        doc["request_counts"] = {"total": batch.n, "completed": succeeded, "failed": done - succeeded}
        if not ended:
            doc["status"] = "cancelling" if batch.cancel_at is not None else "in_progress"
            return doc
        end = int(batch.wall(batch.ends_at))
        doc["output_file_id"], doc["error_file_id"] = self.ensure_files(batch)
        if batch.cancel_at is not None:
            doc.update(status="cancelled", cancelled_at=end)
        elif Outcome.EXPIRED in batch.outcomes:
            doc.update(status="expired", expired_at=end)
        else:
            doc.update(status="completed", finalizing_at=end, completed_at=end)
        return doc

