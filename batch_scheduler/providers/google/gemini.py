"""Gemini Developer API, Batch Mode (`--provider gemini`; PROVIDERS.md §1, host generativelanguage.googleapis.com).

    create:  POST /v1beta/models/{model}:batchGenerateContent  {"batch": {displayName, inputConfig}}
             inputConfig: the requests inline (a small batch), or a file uploaded first by the resumable
             protocol (POST /upload/v1beta/files: start, then upload + finalize at the URL it answers)
    poll:    GET /v1beta/batches/{id}, GET /v1beta/batches?pageSize=&pageToken=
    results: inline in the batch object, or GET /download/v1beta/{responsesFile}:download?alt=media

The key goes in `x-goog-api-key`. One model per batch (it is in the path): `lane_of` names a line's
model, so a job with several models is cut into per-model batches as OpenAI's are. A line we send is
`{"key", "request": GenerateContentRequest with "models/M"}` (the file form); Message Batches lines are
converted (gemini_convert). Creation is not idempotent: the displayName is the create tag (job and
chunk), which `tag_of` reads back so a lost create is adopted by it, never sent twice.

Answers are untrusted and Google's JSON varies: the batch fields are read under `metadata`, then
`response`, then at the top of the Operation; states come as `JOB_STATE_*` or `BATCH_STATE_*` and are
mapped on the suffix; int64 counts come as strings, zeros left out. Result lines are given to the
collector as `{"custom_id": key, "response" | "error": ...}` (the key first, as every provider's lines
start); a per-request `error` is a google.rpc.Status whose `code` may be a gRPC number or an HTTP status.
`EXPIRED` (48 h) has no results at all: every request of the batch is missing and is sent again, unbilled.

Limits: a project runs at most JOBS_AT_ONCE batch jobs, and a model holds so many enqueued tokens; a batch
counts in both (`SPEC.jobs_queue` beside the token queue of its model). A 429 at create that names the
queue is one of them: about jobs when it speaks of concurrent batch jobs and not of tokens (`QueueFull.jobs`:
the next create waits for a batch of ours to end, batches keep their size), else about the model's tokens.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import orjson

from batch_scheduler.core import errors
from batch_scheduler.core.headers import merge_headers
from batch_scheduler.core.http import HttpClient
from batch_scheduler.core.settings import MB, JobsQueue, ProviderSpec, Settings, join_url
from batch_scheduler.providers.answers import (
    BATCH_ID,
    ShapeError,
    asked_for,
    document,
    items,
    line_object,
    mapping,
    model_of,
    shown,
    text,
)
from batch_scheduler.providers.base import BatchInfo, BatchState, Outcome, Provider, Usage, encode, parse_time
from batch_scheduler.providers.common import LIST_PAGES_MAX, log
from batch_scheduler.providers.google.gemini_convert import estimate_params, gemini_request

API = "/v1beta"
INLINE_MAX_BYTES = 4 * MB  # above this a batch goes through a file (inline < 20 MB; big inline results are slow)
LIST_PAGE_SIZE = 100
JOBS_AT_ONCE = 100  # concurrent batch jobs per project
_JOBS_FULL = re.compile(r"concurrent|batch jobs", re.IGNORECASE)  # a queue-full 429 about the project's jobs
_STATES = {"PENDING": BatchState.IN_PROGRESS, "RUNNING": BatchState.IN_PROGRESS,
           "UNSPECIFIED": BatchState.IN_PROGRESS, "SUCCEEDED": BatchState.ENDED, "CANCELLED": BatchState.ENDED,
           "EXPIRED": BatchState.ENDED, "FAILED": BatchState.FAILED}
GEMINI_COUNTS = {"requestCount": "total", "successfulRequestCount": "succeeded", "failedRequestCount": "failed",
                 "pendingRequestCount": "pending"}
# per-request Status codes worth another attempt: gRPC DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED, ABORTED,
# INTERNAL, UNAVAILABLE; or their HTTP statuses
TRANSIENT_CODES = frozenset({4, 8, 10, 13, 14, 408, 429, 500, 502, 503, 504})
TRANSIENT_STATUSES = frozenset({"DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED", "ABORTED", "INTERNAL", "UNAVAILABLE"})


def model_name(model: str) -> str:
    """`gemini-2.5-flash` or `models/gemini-2.5-flash` -> `gemini-2.5-flash`."""
    return model.removeprefix("models/")


def int64(doc: dict[str, Any], name: str, what: str) -> int:
    """An int64 field: Google's JSON sends it as a string ("12"), or a number; absent is 0."""
    value = doc.get(name)
    if value is None:
        return 0
    if type(value) is str and value.isdigit():
        return int(value)
    if type(value) is int and value >= 0:
        return value
    raise errors.BadAnswer(f"{what}: {name} is {shown(value)}, expected a whole number (int64)")


def batch_fields(doc: dict[str, Any]) -> dict[str, Any]:
    """The batch's own fields: under `metadata` (the Operation the API answers), `response` (a done
    Operation), or at the top (as the guide's REST snippets read them); the first place wins."""
    merged: dict[str, Any] = {}
    for where in (doc, doc.get("response"), doc.get("metadata")):
        if isinstance(where, dict):
            merged.update({k: v for k, v in where.items() if v is not None and k != "@type"})
    return merged


def state_of(value: Any, what: str) -> tuple[BatchState, str]:
    """(state, its suffix) of `JOB_STATE_X` or `BATCH_STATE_X`."""
    if isinstance(value, str):
        for prefix in ("JOB_STATE_", "BATCH_STATE_"):
            if value.startswith(prefix) and value[len(prefix):] in _STATES:
                return _STATES[value[len(prefix):]], value[len(prefix):]
    raise errors.BadAnswer(f"{what}: state is {shown(value)}, expected JOB_STATE_* or BATCH_STATE_*")


def usage_of(u: dict[str, Any], cid: str) -> Usage:
    """`usageMetadata`: the prompt includes cached tokens (read apart), thoughts are billed as output."""
    where = "response.usageMetadata"

    def count(name: str) -> int:
        value = u.get(name)
        if value is None:
            return 0
        if type(value) is str and value.isdigit():
            return int(value)
        if type(value) is not int or value < 0:
            raise ShapeError(cid, f"{where}.{name} is {shown(value)}, expected a whole number >= 0")
        return value

    cached = count("cachedContentTokenCount")
    return Usage(input_tokens=max(0, count("promptTokenCount") - cached),
                 output_tokens=count("candidatesTokenCount") + count("thoughtsTokenCount"), cache_read_tokens=cached)


def status_transient(error: dict[str, Any]) -> bool:
    code, status = error.get("code"), error.get("status")
    return (type(code) is int and code in TRANSIENT_CODES) or status in TRANSIENT_STATUSES


def classify_line(line: bytes) -> tuple[str, Outcome, Usage | None, str | None]:
    """Route and count one result line `{"custom_id", "response" | "error"}` (as result_blocks gives them)."""
    doc = orjson.loads(line)
    if not isinstance(doc, dict):
        raise ValueError(f"expected a JSON object, got {shown(doc)}")
    cid = doc.get("custom_id")
    if not isinstance(cid, str) or not cid:
        raise ValueError(f"key is {shown(cid)}, expected a non-empty string")
    if doc.get("error") is not None:
        error = line_object(doc["error"], cid, "error")
        return cid, (Outcome.ERRORED_TRANSIENT if status_transient(error) else Outcome.ERRORED), None, None
    response = line_object(doc.get("response"), cid, "response")
    usage = usage_of(line_object(response.get("usageMetadata") or {}, cid, "response.usageMetadata"), cid)
    return cid, Outcome.SUCCEEDED, usage, model_of(response.get("modelVersion"), cid, "response.modelVersion")


def keyed(item: Any, key: Any) -> bytes | None:
    """A result as the collector reads it: `{"custom_id": key, ...}`; None when it names no key."""
    if not isinstance(item, dict) or not isinstance(key, str) or not key:
        return None
    return encode({"custom_id": key, **{k: v for k, v in item.items() if k not in ("key", "metadata")}})


SPEC = ProviderSpec(
    name="gemini", max_requests=1_000_000, max_bytes=2000 * MB, default_requests=10_000, default_bytes=200 * MB,
    key_env=("GEMINI_API_KEY", "GOOGLE_API_KEY"), base_url_env=("GOOGLE_GEMINI_BASE_URL",),
    default_base_url="https://generativelanguage.googleapis.com", default_auth="x-api-key",
    model_env=("GEMINI_MODEL",), custom_headers_env=("GEMINI_CUSTOM_HEADERS",),
    custom_id=r"[^\x00-\x1f\x7f]{1,512}", custom_id_rule="1-512 characters, no control characters",
    # enqueued tokens per model: Tier 1's smallest batch figure (Gemini 3 Flash Preview) .. a generous top
    queue_unit="tokens", queue_start=3_000_000, queue_max=5_000_000_000,
    jobs_queue=JobsQueue("batch jobs", "", JOBS_AT_ONCE, alone=False))


def jobs_full(message: str) -> bool:
    """Whether a queue-full answer's message is about the project's batch jobs, not a model's enqueued tokens."""
    return _JOBS_FULL.search(message) is not None and "token" not in message.lower()


class GeminiProvider(Provider):
    name = "gemini"
    spec = SPEC
    id_fields = ("custom_id", "key")

    def __init__(self, settings: Settings, http: HttpClient):
        self.settings = settings
        self.http = http
        self.inline_max_bytes = INLINE_MAX_BYTES
        self._base = settings.base_url
        self._batches = join_url(settings.base_url, f"{API}/batches")

    @staticmethod
    def headers(settings: Settings) -> dict[str, str]:
        """`x-goog-api-key` (a proxy that wants `--auth bearer` gets Authorization: Bearer)."""
        if settings.auth == "bearer":
            return merge_headers({"authorization": f"Bearer {settings.api_key}"}, settings.headers)
        return merge_headers({"x-goog-api-key": settings.api_key}, settings.headers)

    @staticmethod
    def estimate_view(obj: dict) -> dict:
        """A line as Messages-like params for the estimates: model, text fields, max output tokens."""
        request = obj.get("request")
        if not isinstance(request, dict):
            return obj
        model = request.get("model")
        return {"params": estimate_params(request, model_name(model) if isinstance(model, str) else None)}

    # -- input lines ----------------------------------------------------------------------------

    def check_request(self, obj: dict, raw: bytes) -> tuple[str | None, bytes | None]:
        cid = obj.get("custom_id", obj.get("key"))
        if "params" in obj and "request" not in obj:
            params = obj["params"]
            request, problem = gemini_request(params)
            model = params.get("model") if isinstance(params, dict) else None
            where = "params.model"
        else:
            request, problem = obj.get("request"), None
            if not isinstance(request, dict):
                return "request missing or not an object (a GenerateContentRequest)", None
            if not isinstance(request.get("contents"), list) or not request["contents"]:
                return "request.contents must be a non-empty list", None
            model, where = request.get("model"), "request.model"
        if problem:
            return problem, None
        model = model or self.settings.model
        if not isinstance(model, str) or not model.strip("/") or "/" in model_name(model):
            return f"{where} missing or not a model name (give --model or GEMINI_MODEL to fill it)", None
        assert request is not None
        return None, encode({"key": cid, "request": {**request, "model": "models/" + model_name(model)}})

    def lane_of(self, obj: dict) -> str:
        """The model an accepted line runs on: one model per batch (it is in the create's path)."""
        body = obj.get("params") if "params" in obj and "request" not in obj else obj.get("request")
        model = body.get("model") if isinstance(body, dict) else None
        return model_name(model or self.settings.model or "")

    def body_overhead(self, line_bytes: int) -> int:
        return 1  # the newline of the file (inline, the wrapping is about as long as the key it moves)

    # -- calls ----------------------------------------------------------------------------------

    async def create(self, lines: list[bytes], *, tag: str) -> BatchInfo:
        model = model_name(orjson.loads(lines[0])["request"]["model"])
        size = sum(map(len, lines))
        if size <= self.inline_max_bytes:
            requests = []
            for line in lines:
                doc = orjson.loads(line)
                requests.append({"request": doc["request"], "metadata": {"key": doc["key"]}})
            config: dict[str, Any] = {"requests": {"requests": requests}}
        else:
            config = {"fileName": await self._upload(b"\n".join(lines) + b"\n", tag)}
        body = orjson.dumps({"batch": {"displayName": tag, "model": f"models/{model}", "inputConfig": config}})
        url = join_url(self._base, f"{API}/models/{model}:batchGenerateContent")
        try:
            data = await self.http.call("POST", url, "create", body=body, idempotent=False,
                                        headers={"content-type": "application/json"})
        except errors.QueueFull as err:
            raise err.about_jobs() if jobs_full(str(err)) else err from None
        return self._info(document(data, "create answer"), "create answer")

    async def _upload(self, data: bytes, tag: str) -> str:
        """The resumable upload: start (the URL comes back in a header), then upload and finalize."""
        start = orjson.dumps({"file": {"displayName": tag}})
        headers = {"X-Goog-Upload-Protocol": "resumable", "X-Goog-Upload-Command": "start",
                   "X-Goog-Upload-Header-Content-Length": str(len(data)),
                   "X-Goog-Upload-Header-Content-Type": "application/jsonl", "content-type": "application/json"}
        _, answer = await self._raw("POST", join_url(self._base, f"/upload{API}/files"), "upload", start, headers)
        upload_url = answer.get("x-goog-upload-url")
        if not upload_url:
            raise errors.BadAnswer("upload start answer: no x-goog-upload-url header")
        if not upload_url.startswith(self._base.rstrip("/") + "/"):
            raise errors.BadAnswer(f"upload start answer: x-goog-upload-url {shown(upload_url)} is not on "
                                   f"{self._base} (the key goes only there)")
        body, _ = await self._raw("POST", upload_url, "upload", data, {
            "X-Goog-Upload-Command": "upload, finalize", "X-Goog-Upload-Offset": "0"})
        file = mapping(document(body, "upload answer"), "file", "upload answer")
        name = text(file, "name", "upload answer: file", required=True)
        assert name is not None
        return name

    async def _raw(self, method: str, url: str, endpoint: str, body: bytes,
                   headers: dict[str, str]) -> tuple[bytes, dict[str, str]]:
        """A call whose answer's headers matter (the upload URL), retried by the client's policy."""

        async def once() -> tuple[bytes, dict[str, str]]:
            async with self.http.request(method, url, data=body, headers=headers,
                                         allow_redirects=False) as resp:
                data = await resp.read()
                if resp.status >= 300:
                    raise errors.from_status(resp.status, data, dict(resp.headers), what=f"{method} {endpoint}")
                return data, {k.lower(): v for k, v in resp.headers.items()}

        result: tuple[bytes, dict[str, str]] = await self.http.retrying(endpoint, once, sent=True)
        return result

    async def get(self, batch_id: str) -> BatchInfo:
        data = await self.http.call("GET", f"{self._batches}/{batch_id}", "retrieve")
        return asked_for(self._info(document(data, f"batch {batch_id}: retrieve answer"), "retrieve answer",
                                    batch_id), batch_id)

    async def recent(self, since: float) -> AsyncIterator[BatchInfo]:
        """Batches created at or after `since`, page by page (the list has no order contract: every
        page is read, at most LIST_PAGES_MAX; a token seen before ends the walk)."""
        token: str | None = None
        seen: set[str] = set()
        for page_no in range(1, LIST_PAGES_MAX + 1):
            what = f"list answer (page {page_no})"
            url = f"{self._batches}?pageSize={LIST_PAGE_SIZE}" + (f"&pageToken={token}" if token else "")
            page = document(await self.http.call("GET", url, "list"), what)
            found = []
            for i, item in enumerate(items(page, "operations", what) or items(page, "batches", what)):
                try:
                    found.append(self._info(item if isinstance(item, dict) else {"name": item}, what))
                except errors.BadAnswer as err:
                    log.warning("%s: operations[%d] skipped: %s", what, i, err)
            found.sort(key=lambda info: -(info.created_at or 0))
            for info in found:
                if info.created_at is None or info.created_at >= since:
                    yield info
            token = text(page, "nextPageToken", what)
            if not token or token in seen:
                return
            seen.add(token)
        log.warning("list batches: stopped after %d pages (a list that always says there is more)", LIST_PAGES_MAX)

    async def cancel(self, batch_id: str) -> BatchInfo:
        await self.http.call("POST", f"{self._batches}/{batch_id}:cancel", "cancel", body=b"{}",
                             headers={"content-type": "application/json"})
        return await self.get(batch_id)

    async def result_blocks(self, info: BatchInfo) -> AsyncIterator[list[bytes]]:
        """The inline responses of the batch object, or its responses file streamed; each keyed line
        `{"custom_id": key, ...}` (a line without a key as it came: the collector names it)."""
        output = self._output(batch_fields(info.raw), f"batch {info.id}")
        inline = items(mapping(output, "inlinedResponses", f"batch {info.id}: output"), "inlinedResponses",
                       f"batch {info.id}: output.inlinedResponses")
        if inline:
            block = [keyed(item, (item.get("metadata") or {}).get("key") if isinstance(item, dict) else None)
                     or orjson.dumps(item) for item in inline]
            yield block
            return
        name = text(output, "responsesFile", f"batch {info.id}: output")
        if name is None:
            return  # EXPIRED, CANCELLED before any result, or nothing succeeded: the requests are missing
        url = join_url(self._base, f"/download{API}/{name}:download?alt=media")
        async for lines in self.http.line_blocks(url, "results"):
            block = []
            for line in lines:
                if not line.strip():
                    continue
                try:
                    doc = orjson.loads(line)
                except orjson.JSONDecodeError:
                    block.append(line)
                    continue
                block.append(keyed(doc, doc.get("key") if isinstance(doc, dict) else None) or line)
            if block:
                yield block

    classify = staticmethod(classify_line)

    @staticmethod
    def tag_of(info: BatchInfo) -> str | None:
        """The create tag: the batch's displayName (None: not one this program named)."""
        name = batch_fields(info.raw).get("displayName")
        return name if isinstance(name, str) else None

    @staticmethod
    def _output(fields: dict[str, Any], what: str) -> dict[str, Any]:
        """`output` (the reference), or `dest` with `fileName` (the guide's snippets)."""
        output = mapping(fields, "output", what)
        if not output:
            dest = mapping(fields, "dest", what)
            output = {"responsesFile": dest.get("fileName"), "inlinedResponses": dest.get("inlinedResponses")}
        return output

    def _info(self, doc: dict, what: str = "list answer", asked: str | None = None) -> BatchInfo:
        """A batch (an Operation), each field it reads checked (BadAnswer naming the batch and the field)."""
        fields = batch_fields(doc)
        name = text(fields, "name", f"batch {asked}: {what}" if asked else what, required=True)
        assert name is not None
        bid = name.removeprefix("batches/")
        if not BATCH_ID.fullmatch(bid):
            raise errors.BadAnswer(f"{what}: name is {shown(name)}, expected batches/<id>")
        what = f"batch {bid}: {what}"
        state, suffix = state_of(fields.get("state"), what)
        stats = mapping(fields, "batchStats", what)
        counts = {ours: int64(stats, theirs, what) for theirs, ours in GEMINI_COUNTS.items()}
        output = self._output(fields, what)
        file = text(output, "responsesFile", what)
        error = None
        if state is BatchState.FAILED:
            status = mapping(fields, "error", what)
            error = str(status.get("message") or "the batch failed (no reason given)")
        return BatchInfo(
            id=bid, state=state, created_at=parse_time(fields.get("createTime")),
            ended_at=parse_time(fields.get("endTime")) if state is not BatchState.IN_PROGRESS else None,
            total=counts["total"] or None, counts={k: v for k, v in counts.items() if k != "total"},
            results=[file] if file else [], error=error, raw=doc,
            queue_full=state is BatchState.FAILED and "enqueued" in (error or "").lower(),
        )
