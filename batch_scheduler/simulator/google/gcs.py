"""A small subset of Cloud Storage's JSON API, for Vertex AI's input and output files.

    GET    /storage/v1/b/{bucket}                                    the bucket (404 when it does not exist)
    POST   /upload/storage/v1/b/{bucket}/o?uploadType=media&name=N   a simple upload
    GET    /storage/v1/b/{bucket}/o?prefix=&pageToken=&maxResults=   {"items": [object], "nextPageToken"}
    GET    /storage/v1/b/{bucket}/o/{object}[?alt=media]             the object's resource, or its bytes
    DELETE /storage/v1/b/{bucket}/o/{object}                         204

Buckets exist when `gcs_buckets` is None or names them. A media download of a results file may be cut
mid-line (`cut_rate`), as the other providers' result downloads are. Objects live in memory, in `objects`.

`StorageServer` is the other way: the Vertex jobs read and write another server's Cloud Storage (a GCS
emulator in the tests, set by `vertex_gcs_endpoint`), as Vertex reads and writes the user's bucket.
"""

from __future__ import annotations

import zlib
from typing import Any, Protocol
from urllib.parse import quote, unquote

import aiohttp
from aiohttp import web

from batch_scheduler.simulator.context import SimContext
from batch_scheduler.simulator.responses import Rejected, json_response, stream_blocks
from batch_scheduler.simulator.store import rfc3339

LIST_MAX = 1000


class Files(Protocol):
    """Where a Vertex job reads its input and writes its output."""

    async def read_object(self, uri: str) -> bytes | None: ...

    async def put_object(self, bucket: str, name: str, data: bytes) -> None: ...


class CloudStorage:
    def __init__(self, ctx: SimContext):
        self.ctx = ctx
        self.objects: dict[tuple[str, str], bytes] = {}
        self._generation = 0

    def routes(self) -> list[tuple[str, str, str, Any, bool]]:
        return [
            ("GET", "/storage/v1/b/{bucket}", "gcs.bucket", self.bucket, False),
            ("POST", "/upload/storage/v1/b/{bucket}/o", "gcs.upload", self.upload, False),
            ("GET", "/storage/v1/b/{bucket}/o", "gcs.list", self.list, False),
            ("GET", "/storage/v1/b/{bucket}/o/{object:.+}", "gcs.get", self.get, False),
            ("DELETE", "/storage/v1/b/{bucket}/o/{object:.+}", "gcs.delete", self.delete, False),
        ]

    # -- what the Vertex jobs read and write ----------------------------------------------------------

    def put(self, bucket: str, name: str, data: bytes) -> None:
        self.objects[(bucket, name)] = data

    def read(self, uri: str) -> bytes | None:
        bucket, _, name = uri.removeprefix("gs://").partition("/")
        return self.objects.get((bucket, name))

    async def read_object(self, uri: str) -> bytes | None:
        return self.read(uri)

    async def put_object(self, bucket: str, name: str, data: bytes) -> None:
        self.put(bucket, name, data)

    # -- handlers -------------------------------------------------------------------------------------

    def _bucket(self, request: web.Request) -> str:
        bucket = request.match_info["bucket"]
        known = self.ctx.config.gcs_buckets
        if known is not None and bucket not in known:
            raise Rejected("not_found_error", "The specified bucket does not exist.")
        return bucket

    def _resource(self, bucket: str, name: str) -> dict[str, Any]:
        data = self.objects[(bucket, name)]
        return {"kind": "storage#object", "id": f"{bucket}/{name}", "name": name, "bucket": bucket,
                "size": str(len(data)), "contentType": "application/jsonl", "crc32c": str(zlib.crc32(data)),
                "timeCreated": rfc3339(self.ctx.wall_time())}

    async def bucket(self, request: web.Request) -> web.Response:
        bucket = self._bucket(request)
        return json_response({"kind": "storage#bucket", "id": bucket, "name": bucket, "location": "US"})

    async def upload(self, request: web.Request) -> web.Response:
        bucket = self._bucket(request)
        name = request.query.get("name")
        if request.query.get("uploadType") != "media" or not name:
            raise Rejected("invalid_request_error", "uploadType=media and name are required")
        self.put(bucket, name, await request.read())
        self.ctx.stats["uploads"] += 1
        return json_response(self._resource(bucket, name))

    async def list(self, request: web.Request) -> web.Response:
        bucket = self._bucket(request)
        prefix = request.query.get("prefix", "")
        try:
            start = int(request.query.get("pageToken") or 0)
            size = min(LIST_MAX, int(request.query.get("maxResults") or LIST_MAX))
        except ValueError:
            raise Rejected("invalid_request_error", "Invalid pageToken or maxResults") from None
        names = sorted(n for b, n in self.objects if b == bucket and n.startswith(prefix))
        page = names[start:start + size]
        doc: dict[str, Any] = {"kind": "storage#objects", "items": [self._resource(bucket, n) for n in page]}
        if start + size < len(names):
            doc["nextPageToken"] = str(start + size)
        return json_response(doc)

    def _object(self, request: web.Request) -> tuple[str, str]:
        bucket = self._bucket(request)
        name = unquote(request.match_info["object"])
        if (bucket, name) not in self.objects:
            raise Rejected("not_found_error", f"No such object: {bucket}/{name}")
        return bucket, name

    async def get(self, request: web.Request) -> web.StreamResponse:
        bucket, name = self._object(request)
        if request.query.get("alt") != "media":
            return json_response(self._resource(bucket, name))
        data = self.objects[(bucket, name)]
        self.ctx.stats["results_downloads"] += 1
        config = self.ctx.config
        if data and config.cut_rate and self.ctx.rng.random() < config.cut_rate:
            self.ctx.stats["cut_downloads"] += 1
            cut_at = self.ctx.rng.randrange(len(data))
            return await stream_blocks(request, [data[:max(1, cut_at)]], cut=True, content_type="application/jsonl")
        return await stream_blocks(request, [data], content_type="application/jsonl")

    async def delete(self, request: web.Request) -> web.Response:
        bucket, name = self._object(request)
        del self.objects[(bucket, name)]
        self.ctx.stats["deletes"] += 1
        return web.Response(status=204)


class StorageServer:
    """Another server's Cloud Storage JSON API, read and written as Vertex reads and writes a user's bucket."""

    def __init__(self, endpoint: str):
        self.endpoint = endpoint.rstrip("/")

    async def read_object(self, uri: str) -> bytes | None:
        bucket, _, name = uri.removeprefix("gs://").partition("/")
        url = f"{self.endpoint}/storage/v1/b/{quote(bucket, safe='')}/o/{quote(name, safe='')}?alt=media"
        async with aiohttp.ClientSession() as session, session.get(url) as resp:
            data = await resp.read()
            if resp.status == 404:
                return None
            if resp.status >= 300:
                raise Rejected("api_error", f"Cloud Storage GET {uri}: HTTP {resp.status}")
            return data

    async def put_object(self, bucket: str, name: str, data: bytes) -> None:
        url = f"{self.endpoint}/upload/storage/v1/b/{quote(bucket, safe='')}/o"
        params = {"uploadType": "media", "name": name}
        async with aiohttp.ClientSession() as session, session.post(
                url, params=params, data=data, headers={"content-type": "application/jsonl"}) as resp:
            await resp.read()
            if resp.status >= 300:
                raise Rejected("api_error", f"Cloud Storage upload of gs://{bucket}/{name}: HTTP {resp.status}")
