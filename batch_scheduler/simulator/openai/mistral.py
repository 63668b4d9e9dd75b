"""Mistral batch (PROVIDERS.md §5): files with purpose `batch`, then a job at `/v1/batch/jobs`, Bearer key.

Mistral's `/v1/files` is OpenAI's path with another file object (`sample_type`, `source`, `num_lines`,
... as the mistralai SDK types it), and both take purpose `batch`: nothing in an upload tells the two
apart. Mistral's host is stood for by the prefix `/mistral`, so `{simulator}/mistral` is where
`https://api.mistral.ai` would be (MISTRAL_BASE_URL, or the SDK's `server_url`), and every path under
it is Mistral's own.

What differs from OpenAI (simulator/openai/api.py, which this reuses): lines are `{custom_id, body}`; create
takes `input_files` (one file here: the simulator does not join several), `endpoint`, `model`,
`metadata` and `timeout_hours`, and no completion window (inline `requests` are refused: not
simulated); the job object is Mistral's (statuses QUEUED, RUNNING, SUCCESS, FAILED, TIMEOUT_EXCEEDED,
CANCELLATION_REQUESTED, CANCELLED; counts at the top level; `output_file`, `error_file`; `errors` as
`[{message, count}]`); the list pages by number (`page` from 0, `page_size`, `order_by`) and says the
`total`; no enqueued-token limit (Mistral documents none), at most `mistral_max_requests` a file.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from batch_scheduler.simulator.context import SimContext
from batch_scheduler.simulator.openai.api import LIST_MAX, OpenAIApi
from batch_scheduler.simulator.openai.files import FileRecord, OpenAIFiles
from batch_scheduler.simulator.responses import Rejected, json_response
from batch_scheduler.simulator.store import Batch

HOST = "/mistral"  # stands for api.mistral.ai
ROOT = f"{HOST}/v1"
JOBS = f"{ROOT}/batch/jobs"
STATUSES = {"validating": "QUEUED", "in_progress": "RUNNING", "finalizing": "RUNNING",
            "cancelling": "CANCELLATION_REQUESTED", "completed": "SUCCESS", "expired": "TIMEOUT_EXCEEDED",
            "cancelled": "CANCELLED", "failed": "FAILED"}
_SAMPLE_TYPES = {"output": "batch_result", "error": "batch_error"}
_CREATE_KEYS = frozenset({"input_files", "requests", "endpoint", "model", "agent_id", "metadata", "timeout_hours"})


def mistral_file(record: FileRecord) -> dict[str, Any]:
    """A file object as the mistralai SDK types it (CreateFileResponse, GetFileResponse)."""
    data = record.data
    return {"id": record.id, "object": "file", "bytes": record.size, "created_at": record.created_at,
            "filename": record.filename, "purpose": "batch",
            "sample_type": _SAMPLE_TYPES.get(record.which, "batch_request"),
            "source": "upload" if data is not None else "mistral",
            "num_lines": data.count(b"\n") + (not data.endswith(b"\n")) if data else None, "mimetype": None,
            "signature": None, "expires_at": record.expires_at, "visibility": "workspace"}


class MistralFiles(OpenAIFiles):
    """OpenAI's files under Mistral's root, with its file objects (a retrieve says `deleted` too)."""

    def doc(self, record: FileRecord) -> dict[str, Any]:
        return mistral_file(record)

    async def file(self, request: web.Request) -> web.Response:
        record = self.find_file(request)
        if record.data is None:
            self.generated_size(record)
        return json_response({**mistral_file(record), "deleted": False})


class MistralApi(OpenAIApi):
    kind = "mistral"
    max_requests_field = "mistral_max_requests"
    bare_lines = True

    def __init__(self, ctx: SimContext):
        super().__init__(ctx, MistralFiles(ctx, root=ROOT))

    def routes(self) -> list[tuple[str, str, str, Any, bool]]:
        return [
            *self.files.routes(),
            ("POST", JOBS, "mistral.jobs.create", self.create_route, True),
            ("GET", JOBS, "mistral.jobs.list", self.list, False),
            ("GET", f"{JOBS}/{{id}}", "mistral.jobs.retrieve", self.retrieve, False),
            ("POST", f"{JOBS}/{{id}}/cancel", "mistral.jobs.cancel", self.cancel, False),
        ]

    def make(self, doc: Any) -> Batch:
        """A job from Mistral's create body, made as OpenAI's batch on its one input file."""
        if not isinstance(doc, dict):
            raise Rejected("invalid_request_error", "expected a JSON object")
        unknown = sorted(set(doc) - _CREATE_KEYS)
        if unknown:
            raise Rejected("invalid_request_error", f"unknown fields: {', '.join(unknown)}")
        if doc.get("requests") is not None:
            raise Rejected("invalid_request_error", "requests: inline requests are not simulated; upload a file")
        files, model, hours = doc.get("input_files"), doc.get("model"), doc.get("timeout_hours", 24)
        if not (isinstance(files, list) and len(files) == 1 and isinstance(files[0], str)):
            raise Rejected("invalid_request_error", "input_files: expected one file id (the simulator joins none)")
        if model is not None and not isinstance(model, str):
            raise Rejected("invalid_request_error", "model: expected a string")
        if type(hours) is not int or not 1 <= hours <= 7 * 24:
            raise Rejected("invalid_request_error", "timeout_hours: expected a whole number of hours, 1 to 168")
        batch = super().make({"input_file_id": files[0], "endpoint": doc.get("endpoint"), "completion_window": "24h",
                              "metadata": doc.get("metadata")})
        batch.extra["job_model"] = model
        return batch

    def _token_limit(self, model: str | None, tokens: int, now: float) -> list[dict] | None:
        return None  # Mistral documents no enqueued-token limit

    async def list(self, request: web.Request) -> web.Response:
        self.ctx.stats["lists"] += 1
        page, size = request.query.get("page", "0"), request.query.get("page_size", str(LIST_MAX))
        if not page.isdigit() or not size.isdigit() or not 1 <= int(size) <= LIST_MAX:
            raise Rejected("invalid_request_error", f"page: a whole number; page_size: 1 to {LIST_MAX}")
        batches = [b for b in self.ctx.store.batches.values() if b.kind == self.kind]
        if request.query.get("order_by", "-created") == "-created":
            batches.reverse()
        start, end = int(page) * int(size), (int(page) + 1) * int(size)
        return json_response({"data": [self.doc(b) for b in batches[start:end]], "object": "list",
                              "total": len(batches)})

    def doc(self, batch: Batch, *, fresh: bool = False, cancelling: bool = False) -> dict[str, Any]:
        doc = super().doc(batch, fresh=fresh, cancelling=cancelling)
        counts = doc["request_counts"]
        errors = (doc["errors"] or {}).get("data") or []
        ended = next((doc[k] for k in ("completed_at", "failed_at", "expired_at", "cancelled_at") if doc[k]), None)
        return {
            "id": doc["id"], "object": "batch", "input_files": [doc["input_file_id"]], "metadata": doc["metadata"],
            "endpoint": doc["endpoint"], "model": batch.extra["job_model"] or doc["model"], "agent_id": None,
            "output_file": doc["output_file_id"], "error_file": doc["error_file_id"],
            "errors": [{"message": str(e["message"]), "count": 1} for e in errors], "outputs": None,
            "status": STATUSES[doc["status"]], "created_at": doc["created_at"], "total_requests": counts["total"],
            "completed_requests": counts["completed"] + counts["failed"], "succeeded_requests": counts["completed"],
            "failed_requests": counts["failed"], "started_at": doc["in_progress_at"], "completed_at": ended,
        }
