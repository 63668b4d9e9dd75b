"""Gemini Files API (PROVIDERS.md §1): the resumable upload of a batch's input, file metadata, downloads.

    POST /upload/{v}/files            X-Goog-Upload-Command: start -> 200, header x-goog-upload-url
    POST /upload/{v}/files?upload_id= X-Goog-Upload-Command: upload[, finalize], X-Goog-Upload-Offset
                                      -> x-goog-upload-status: active | final; final answers {"file": File}
    GET  /{v}/files/{id}              the File
    GET  /download/{v}/files/{id}:download?alt=media, GET /{v}/files/{id}:download?alt=media: its bytes

A batch's responses file is not stored: its lines are rendered from the batch (gemini.py) on each
download, shuffled and maybe cut, as the context's download plan says.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from batch_scheduler.simulator.context import SimContext
from batch_scheduler.simulator.responses import (
    CHUNK_BYTES,
    Rejected,
    json_response,
    stream_blocks,
    stream_jsonl,
)
from batch_scheduler.simulator.store import new_id, rfc3339

FILE_TTL_S = 48 * 3600
FILE_PREFIX = "gfile"
Render = Callable[[str], tuple[Iterable[str], int | None] | None]  # batch id -> (lines, cut at), for outputs


@dataclass(eq=False, slots=True)
class GeminiFile:
    id: str
    display_name: str
    mime_type: str
    created_wall: float
    size: int
    data: bytearray = field(default_factory=bytearray)
    batch_id: str | None = None  # a responses file: rendered from this batch
    done: bool = False

    def doc(self, *, downloadable: bool = False) -> dict[str, Any]:
        created = rfc3339(self.created_wall)
        doc: dict[str, Any] = {
            "name": f"files/{self.id}", "displayName": self.display_name, "mimeType": self.mime_type,
            "sizeBytes": str(self.size), "createTime": created, "updateTime": created,
            "expirationTime": rfc3339(self.created_wall + FILE_TTL_S), "sha256Hash": "",
            "uri": f"https://generativelanguage.googleapis.com/v1beta/files/{self.id}", "state": "ACTIVE",
            "source": "GENERATED" if self.batch_id else "UPLOADED",
        }
        if downloadable or self.batch_id:
            doc["downloadUri"] = f"https://generativelanguage.googleapis.com/download/v1beta/files/{self.id}:download?alt=media"
        return doc


class GeminiFiles:
    def __init__(self, ctx: SimContext):
        self.ctx = ctx
        self.files: dict[str, GeminiFile] = {}
        self.render: Render = lambda batch_id: None  # set by the batches API

    def routes(self) -> list[tuple[str, str, str, Any, bool]]:
        fid = "{id:" + FILE_PREFIX + "[A-Za-z0-9]+}"
        out = []
        for v in ("v1beta", "v1"):
            out += [
                ("POST", f"/upload/{v}/files", "gemini.files.upload", self.upload, False),
                ("GET", f"/{v}/files/{fid}:download", "gemini.files.download", self.download, False),
                ("GET", f"/download/{v}/files/{fid}:download", "gemini.files.download", self.download, False),
                ("GET", f"/{v}/files/{fid}", "gemini.files.get", self.get, False),
            ]
        return out

    def find(self, request: web.Request) -> GeminiFile:
        found = self.files.get(request.match_info["id"])
        if found is None or not found.done:
            raise Rejected("not_found_error", f"File files/{request.match_info['id']} not found.")
        return found

    async def upload(self, request: web.Request) -> web.Response:
        command = request.headers.get("X-Goog-Upload-Command", "").replace(" ", "")
        if command == "start":
            return await self._start(request)
        upload = self.files.get(request.query.get("upload_id", ""))
        if upload is None or upload.done:
            raise Rejected("not_found_error", "No such upload session.")
        data = await request.read()
        if request.headers.get("X-Goog-Upload-Offset", "0") != str(len(upload.data)):
            raise Rejected("invalid_request_error", "X-Goog-Upload-Offset does not match the bytes received.")
        upload.data += data
        if "finalize" not in command.split(","):
            return web.Response(headers={"x-goog-upload-status": "active"})
        upload.done, upload.size = True, len(upload.data)
        self.ctx.stats["uploads"] += 1
        return json_response({"file": upload.doc()}, headers={"x-goog-upload-status": "final",
                                                              "x-request-id": new_id("req")})

    async def _start(self, request: web.Request) -> web.Response:
        if request.headers.get("X-Goog-Upload-Protocol") != "resumable":
            raise Rejected("invalid_request_error", "X-Goog-Upload-Protocol must be resumable.")
        raw = await request.read()
        try:
            meta = (orjson.loads(raw) or {}).get("file") or {} if raw else {}
        except (orjson.JSONDecodeError, AttributeError):
            raise Rejected("invalid_request_error", "Invalid JSON payload received.") from None
        size = request.headers.get("X-Goog-Upload-Header-Content-Length", "")
        upload = GeminiFile(id=new_id(FILE_PREFIX), display_name=str(meta.get("displayName") or ""),
                            mime_type=request.headers.get("X-Goog-Upload-Header-Content-Type") or "application/jsonl",
                            created_wall=self.ctx.wall_time(), size=int(size) if size.isdigit() else 0)
        self.files[upload.id] = upload
        url = f"{request.url.origin()}{request.path}?upload_id={upload.id}&upload_protocol=resumable"
        return web.Response(headers={"x-goog-upload-url": url, "x-goog-upload-status": "active",
                                     "x-goog-upload-chunk-granularity": "8388608"})

    def output_file(self, batch_id: str) -> str:
        """The responses file of an ended batch (made once)."""
        for f in self.files.values():
            if f.batch_id == batch_id:
                return f"files/{f.id}"
        made = GeminiFile(id=new_id(FILE_PREFIX), display_name=f"batch-{batch_id}",
                          mime_type="application/jsonl", created_wall=self.ctx.wall_time(), size=0,
                          batch_id=batch_id, done=True)
        self.files[made.id] = made
        return f"files/{made.id}"

    async def get(self, request: web.Request) -> web.Response:
        return json_response(self.find(request).doc())

    async def download(self, request: web.Request) -> web.StreamResponse:
        found = self.find(request)
        if found.batch_id is None:
            data = bytes(found.data)
            return await stream_blocks(request, (data[i:i + CHUNK_BYTES] for i in range(0, len(data), CHUNK_BYTES)))
        rendered = self.render(found.batch_id)
        if rendered is None:
            raise Rejected("not_found_error", f"File files/{found.id} not found.")
        lines, cut_at = rendered
        return await stream_jsonl(request, lines, cut_at=cut_at, content_type="application/octet-stream")
