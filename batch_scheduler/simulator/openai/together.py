"""Together batch (PROVIDERS.md §7): OpenAI-like batches on OpenAI's own paths, `/v1/files` and `/v1/batches`.

What differs from OpenAI (simulator/openai/api.py, which this reuses): the upload's purpose is
`batch-api` (the one /v1/files store holds both kinds: a create on a `batch-api` file makes a
Together batch, server.py routes it here); lines are `{custom_id, body}`, no method or url; create
takes `model_id` and `priority`, no metadata (it is not kept), an optional `completion_window` of
`24h`, and answers `{"job": {...}, "warning": null}`; the batch object is Together's (`status` in
capitals, ISO-8601 times, `progress` 0-100, `job_deadline`, `model_id`, `error` as a string, no
request counts); the list is one bare array of every batch, no paging. A file object is Together's
(`FileType`, `processing_status`, `validation_report`).

`GET /v1/batches` is OpenAI's list too: one port answers both, and it answers Together's array when
the batches it holds are Together's (a Together batch and no OpenAI one), OpenAI's page otherwise.
By default the answers are what the together SDK's types accept; `together_variants` (a fault
option, on in `SimConfig.real_faults`) also spells a cancelling batch `CANCELING`, as Together's
legacy SDK does.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from batch_scheduler.simulator.openai.api import OpenAIApi
from batch_scheduler.simulator.openai.files import FileRecord
from batch_scheduler.simulator.responses import Rejected, json_response
from batch_scheduler.simulator.store import Batch

PURPOSE = "batch-api"
USER_ID = "simulator-user"
STATUSES = {"validating": "VALIDATING", "in_progress": "IN_PROGRESS", "finalizing": "IN_PROGRESS",
            "cancelling": "IN_PROGRESS", "completed": "COMPLETED", "expired": "EXPIRED", "cancelled": "CANCELLED",
            "failed": "FAILED"}
_ENDS = ("completed_at", "failed_at", "expired_at", "cancelled_at")


def iso(epoch_s: int | None) -> str | None:
    return None if epoch_s is None else datetime.fromtimestamp(epoch_s, UTC).isoformat().replace("+00:00", "Z")


def together_file(record: FileRecord) -> dict[str, Any]:
    return {"id": record.id, "object": "file", "bytes": record.size, "created_at": record.created_at,
            "filename": record.filename, "FileType": "jsonl", "purpose": PURPOSE, "processing_status": None,
            "validation_report": None}


class TogetherApi(OpenAIApi):
    kind = "together"
    max_requests_field = "together_max_requests"
    windows = "'24h' (or none)"
    bare_lines = True

    def routes(self) -> list[tuple[str, str, str, Any, bool]]:
        return []  # its paths are OpenAI's: server.py routes each call by what it names

    @staticmethod
    def takes_window(window: Any) -> bool:
        return window in (None, "24h")

    def owns_create(self, doc: Any) -> bool:
        """Whether a `POST /v1/batches` body is Together's: it names a `batch-api` file."""
        file_id = doc.get("input_file_id") if isinstance(doc, dict) else None
        record = self.files.records.get(file_id) if isinstance(file_id, str) else None
        return record is not None and record.purpose == PURPOSE

    def owns(self, batch_id: str) -> bool:
        return self.ctx.store.get(batch_id, self.kind) is not None

    def lists(self) -> bool:
        """Whether `GET /v1/batches` answers Together's array: the batches held are Together's."""
        kinds = {b.kind for b in self.ctx.store.batches.values()}
        return self.kind in kinds and "openai" not in kinds

    def make(self, doc: Any) -> Batch:
        if isinstance(doc, dict):
            model = doc.get("model_id")
            if model is not None and not isinstance(model, str):
                raise Rejected("invalid_request_error", "model_id: expected a string")
            doc = {k: v for k, v in doc.items() if k not in ("metadata", "model_id", "priority")}
        batch = super().make(doc)
        batch.extra["output_purpose"] = PURPOSE
        return batch

    def created(self, batch: Batch) -> Any:
        return {"job": self.doc(batch, fresh=True), "warning": None}

    async def list(self, request: web.Request) -> web.Response:
        self.ctx.stats["lists"] += 1
        batches = [b for b in reversed(self.ctx.store.batches.values()) if b.kind == self.kind]
        return json_response([self.doc(b) for b in batches])

    def doc(self, batch: Batch, *, fresh: bool = False, cancelling: bool = False) -> dict[str, Any]:
        doc = super().doc(batch, fresh=fresh, cancelling=cancelling)
        status = STATUSES[doc["status"]]
        if doc["status"] == "cancelling" and self.ctx.config.together_variants:
            status = "CANCELING"
        counts = doc["request_counts"]
        errors = (doc["errors"] or {}).get("data") or []
        record = self.files.records.get(doc["input_file_id"])
        return {
            "id": doc["id"], "user_id": USER_ID, "input_file_id": doc["input_file_id"],
            "file_size_bytes": record.size if record is not None else None, "status": status,
            "job_deadline": iso(doc["expires_at"]), "created_at": iso(doc["created_at"]),
            "completed_at": iso(next((doc[k] for k in _ENDS if doc[k]), None)), "endpoint": doc["endpoint"],
            "progress": round(100 * (counts["completed"] + counts["failed"]) / counts["total"], 2)
            if counts["total"] else 0.0,
            "model_id": doc["model"], "output_file_id": doc["output_file_id"], "error_file_id": doc["error_file_id"],
            "error": "; ".join(str(e["message"]) for e in errors) or None,
        }
