"""OpenAI Files (API-NOTES §2): upload a batch's input, retrieve, download and delete files.

An uploaded file keeps its bytes. A batch's output and error files are not stored: their records
are made when the batch has ended (`ensure_files`) and their lines rendered from the batch on each
download, in a shuffled order that may be cut (the context's download plan). Files expire 30 days
after creation unless `expires_after` says otherwise.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import BodyPartReader, web

from batch_scheduler.simulator.context import SimContext
from batch_scheduler.simulator.openai.bodies import response_body
from batch_scheduler.simulator.responses import (
    CHUNK_BYTES,
    Rejected,
    json_response,
    stream_blocks,
    stream_jsonl,
)
from batch_scheduler.simulator.store import Batch, Outcome, new_id

FILE_TTL_S = 30 * 24 * 3600
_SERVER_ERROR = {"error": {"message": "The server had an error while processing your request. Sorry about that!",
                           "type": "server_error", "param": None, "code": None}}
_EXPIRED = {"code": "batch_expired",
            "message": "This request could not be executed before the completion window expired."}
_CANCELLED = {"code": "batch_cancelled",
              "message": "This request was not executed because the batch was cancelled."}
_TIMEOUT = {"code": "request_timeout", "message": "The request timed out: the underlying call to the model "
                                                  "did not finish in time. Please try again."}


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


def file_lines(batch: Batch, which: str, order: list[int] | range) -> Iterator[str]:
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


async def _read_upload(request: web.Request) -> tuple[str | None, str, bytes | None, dict[str, Any]]:
    """(purpose, filename, data, expires_after fields) of a multipart upload."""
    if not request.content_type.startswith("multipart/"):
        raise Rejected("invalid_request_error", "expected a multipart/form-data body with purpose and file")
    purpose, filename, data = None, "upload.jsonl", None
    expiry: dict[str, Any] = {}
    reader = await request.multipart()
    while (part := await reader.next()) is not None:
        if not isinstance(part, BodyPartReader):  # a multipart nested in a field
            raise Rejected("invalid_request_error", "expected a multipart/form-data body with purpose and file")
        if part.name == "purpose":
            purpose = await part.text()
        elif part.name == "file":
            filename = part.filename or filename
            data = bytes(await part.read())
        elif part.name in ("expires_after[anchor]", "expires_after[seconds]"):
            text = await part.text()
            expiry[part.name[14:-1]] = int(text) if part.name.endswith("[seconds]") and text.isdigit() else text
    return purpose, filename, data, expiry


class OpenAIFiles:
    """The file records: uploaded inputs and the generated output and error files of ended batches."""

    def __init__(self, ctx: SimContext, root: str = "/v1", purposes: tuple[str, ...] = ("batch",),
                 empty_error_file: bool = False,
                 shapes: Mapping[str, Callable[[FileRecord], dict[str, Any]]] | None = None):
        self.ctx = ctx
        self.records: dict[str, FileRecord] = {}
        self.root = root  # the paths' prefix (Azure, Groq: /openai/v1)
        self.purposes = purposes  # what an upload may say (Together's batch-api beside OpenAI's batch)
        self.empty_error_file = empty_error_file  # an ended batch always has an error file, empty or not (Azure)
        self.shapes = shapes or {}  # a file object by purpose, when it is not OpenAI's (Groq, Together)

    def doc(self, record: FileRecord) -> dict[str, Any]:
        return self.shapes.get(record.purpose, FileRecord.doc)(record)

    def routes(self) -> list[tuple[str, str, str, Any, bool]]:
        root = self.root
        return [
            ("POST", f"{root}/files", "files.upload", self.upload, False),
            ("GET", f"{root}/files/{{id}}", "files.retrieve", self.file, False),
            ("GET", f"{root}/files/{{id}}/content", "files.content", self.content, False),
            ("DELETE", f"{root}/files/{{id}}", "files.delete", self.delete_file, False),
        ]

    def find_file(self, request: web.Request, *, ghosts: bool = True) -> FileRecord:
        record = self.records.get(request.match_info["id"])
        batch = self.ctx.store.batches.get(record.batch_id) if record is not None and record.batch_id else None
        if record is None or (ghosts and batch is not None and self.ctx.ghost(batch)):
            raise Rejected("not_found_error", f"No such File object: {request.match_info['id']}")
        return record

    async def upload(self, request: web.Request) -> web.Response:
        purpose, filename, data, expiry = await _read_upload(request)
        if data is None:
            raise Rejected("invalid_request_error", "Missing required parameter: 'file'.")
        if purpose not in self.purposes:
            raise Rejected("invalid_request_error",
                           f"purpose: the simulator only takes purpose {' or '.join(map(repr, self.purposes))}")
        created = int(self.ctx.wall_time())
        record = FileRecord(id=new_id("file-"), purpose=purpose, filename=filename, created_at=created,
                            data=data, size=len(data), expires_at=created + expires_after(expiry or None))
        self.records[record.id] = record
        self.ctx.stats["uploads"] += 1
        return json_response(self.doc(record))

    def generated_size(self, record: FileRecord) -> int:
        if record.size is None:
            batch = self.ctx.store.batches[record.batch_id or ""]
            record.size = sum(len(line.encode()) for line in file_lines(batch, record.which, range(batch.n)))
        return record.size

    async def file(self, request: web.Request) -> web.Response:
        record = self.find_file(request)
        if record.data is None:
            self.generated_size(record)
        return json_response(self.doc(record))

    async def content(self, request: web.Request) -> web.StreamResponse:
        record = self.find_file(request)
        if record.data is not None:
            data = record.data
            blocks = (data[i:i + CHUNK_BYTES] for i in range(0, len(data), CHUNK_BYTES))
            return await stream_blocks(request, blocks)
        batch = self.ctx.store.batches[record.batch_id or ""]
        output, errors = file_line_counts(batch)
        order, cut_at = self.ctx.download_plan(batch.n, output if record.which == "output" else errors)
        return await stream_jsonl(request, file_lines(batch, record.which, order), cut_at=cut_at,
                                  content_type="application/octet-stream")

    async def delete_file(self, request: web.Request) -> web.Response:
        record = self.find_file(request, ghosts=False)
        del self.records[record.id]
        return json_response({"id": record.id, "object": "file", "deleted": True})

    def ensure_files(self, batch: Batch) -> tuple[str | None, str | None]:
        """Output and error file ids of an ended batch (None when that file would be empty)."""
        if "files" not in batch.extra:
            ids: list[str | None] = []
            created = int(batch.wall(batch.ends_at))
            for which, lines in zip(("output", "error"), file_line_counts(batch), strict=True):
                if not lines and not (which == "error" and self.empty_error_file):
                    ids.append(None)
                    continue
                record = FileRecord(id=new_id("file-"), purpose=batch.extra.get("output_purpose", "batch_output"),
                                    filename=f"{batch.id}_{which}.jsonl", created_at=created,
                                    batch_id=batch.id, which=which, expires_at=created + batch.extra["output_ttl_s"])
                self.records[record.id] = record
                ids.append(record.id)
            batch.extra["files"] = tuple(ids)
        return batch.extra["files"]
