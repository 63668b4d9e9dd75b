"""OpenAI Batch (`--provider openai`; API-NOTES §2): upload a JSONL file, create a batch on it, read two files.

    create:  POST /v1/files (multipart, purpose=batch)  ->  POST /v1/batches {input_file_id, endpoint, ...}
    poll:    GET /v1/batches/{id}, GET /v1/batches?after= (newest first)
    results: GET /v1/files/{output_file_id}/content, then GET /v1/files/{error_file_id}/content

Input lines are `{custom_id, method: "POST", url, body}`; lines in the Message Batches form
`{custom_id, params}` are converted to chat-completions lines (system first, a list of text blocks
joined with blank lines; params without an equivalent, or non-text blocks, are refused by name). One
batch file has one endpoint and one model: `lane_of` names a line's pair, and the batcher keeps one
open batch per pair (`job.batcher`), so a job may mix models and endpoints and no batch does.

The upload is safe to repeat (an orphan file costs nothing and is deleted when the create is
refused outright); the create is not (`idempotent=False`: a lost answer is an unknown outcome). The
create tag (job and chunk) goes into the batch's metadata under `batch_scheduler`; `tag_of` reads it
back, so adoption of a lost create goes by it and jobs sharing an account never take each other's batches.
Usage: `prompt_tokens` include the cached ones, so input = prompt - cached and cache_read = cached,
which is how the price table (Anthropic's meaning of the token kinds) charges them.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import AsyncIterator

import orjson

from batch_scheduler.core import errors
from batch_scheduler.core.headers import merge_headers
from batch_scheduler.core.http import HttpClient
from batch_scheduler.core.settings import MB, ProviderSpec, Settings, join_url
from batch_scheduler.providers.answers import (
    ShapeError,
    asked_for,
    batch_id,
    custom_id_of,
    document,
    line_object,
    model_of,
    shown,
    text,
    tokens,
)
from batch_scheduler.providers.answers import counts as request_counts
from batch_scheduler.providers.base import (
    TRANSIENT_ERROR_KINDS,
    BatchInfo,
    BatchState,
    Outcome,
    Provider,
    Usage,
    encode,
    parse_time,
)
from batch_scheduler.providers.common import check_message_params, list_since
from batch_scheduler.providers.counting import count_tiktoken
from batch_scheduler.providers.realtime import openai_answer, openai_error_line

_FILES = "/v1/files"
_BATCHES = "/v1/batches"
CHAT_URL = "/v1/chat/completions"
# endpoint -> the body field a request cannot do without
ENDPOINTS = {CHAT_URL: "messages", "/v1/responses": "input", "/v1/embeddings": "input",
             "/v1/completions": "prompt"}
_ENDED = {"completed", "expired", "cancelled"}
_LINE_KEYS = frozenset({"custom_id", "method", "url", "body"})
# Messages params that have a chat-completions equivalent (name there)
_CONVERTIBLE = {"model": "model", "max_tokens": "max_tokens", "temperature": "temperature", "top_p": "top_p",
                "stop_sequences": "stop"}
LIST_LIMIT = 100
OPENAI_COUNTS = ("total", "completed", "failed")  # the request_counts entries read
METADATA_KEY = "batch_scheduler"  # where the create tag is kept in a batch's metadata


def text_of(content: object, where: str) -> tuple[str | None, str | None]:
    """(text, None) of a string or a list of text blocks; (None, error) for anything else."""
    if isinstance(content, str):
        return content, None
    if not isinstance(content, list):
        return None, f"{where} must be a string or a list of text blocks"
    parts = []
    for i, block in enumerate(content):
        if not isinstance(block, dict) or block.get("type") != "text" or not isinstance(block.get("text"), str):
            kind = block.get("type") if isinstance(block, dict) else type(block).__name__
            return None, (f"{where}[{i}] is a {kind!r} block: only text converts to the OpenAI form; "
                          f"write the line as {{custom_id, method, url, body}}")
        parts.append(block["text"])
    return "\n\n".join(parts), None


def chat_body_of(params: dict) -> tuple[dict | None, str | None]:
    """A chat-completions body from Messages params: system first, text contents joined."""
    for name in params:
        if name not in _CONVERTIBLE and name not in ("system", "messages"):
            return None, (f"params.{name} has no OpenAI equivalent here; write the line as "
                          f"{{custom_id, method, url, body}}")
    messages = []
    if params.get("system"):
        text, problem = text_of(params["system"], "params.system")
        if problem:
            return None, problem
        messages.append({"role": "system", "content": text})
    if not isinstance(params["messages"], list):
        return None, "params.messages must be a list"
    for i, msg in enumerate(params["messages"]):
        if not isinstance(msg, dict) or "role" not in msg:
            return None, f"params.messages[{i}] must be an object with role and content"
        text, problem = text_of(msg.get("content"), f"params.messages[{i}].content")
        if problem:
            return None, problem
        messages.append({"role": msg["role"], "content": text})
    body = {_CONVERTIBLE[k]: v for k, v in params.items() if k in _CONVERTIBLE}
    body["messages"] = messages
    return body, None


def check_line(obj: dict, model: str | None) -> tuple[dict | None, str | None]:
    """The body of a `{custom_id, method, url, body}` line, its model filled; or what is wrong."""
    if obj.get("method") != "POST":
        return None, f"method must be POST (got {obj.get('method')!r})"
    url = obj.get("url")
    if url not in ENDPOINTS:
        return None, f"url {url!r} is not a batch endpoint: use one of {', '.join(ENDPOINTS)}"
    body = obj.get("body")
    if not isinstance(body, dict):
        return None, "body missing or not an object"
    if "model" not in body:
        if not model:
            return None, "body.model missing (give --model or OPENAI_MODEL to fill it)"
        body = {"model": model, **body}
    if not isinstance(body["model"], str) or not body["model"]:
        return None, "body.model must be a non-empty string"
    if ENDPOINTS[url] not in body:
        return None, f"body.{ENDPOINTS[url]} missing"
    if body.get("stream"):
        return None, "body.stream is not allowed in a batch"
    return body, None


def multipart(fields: dict[str, str], filename: str, data: bytes) -> tuple[bytes, str]:
    """(body, content-type) of a multipart/form-data upload; bytes, so a retry can send it again."""
    boundary = secrets.token_hex(16)
    while boundary.encode() in data:  # pragma: no cover - 128 random bits
        boundary = secrets.token_hex(16)
    head = b"".join(f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
                    for k, v in fields.items())
    head += (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
             f"Content-Type: application/jsonl\r\n\r\n").encode()
    return head + data + f"\r\n--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def _usage(u: dict, cid: str, where: str) -> Usage:
    """Chat/completions (`prompt_tokens`) or responses (`input_tokens`) usage; cached input apart."""
    prompt = tokens(u, "prompt_tokens" if "prompt_tokens" in u else "input_tokens", cid, where)
    output = tokens(u, "completion_tokens" if "completion_tokens" in u else "output_tokens", cid, where)
    details = u.get("prompt_tokens_details") or u.get("input_tokens_details") or {}
    cached = tokens(line_object(details, cid, f"{where}.prompt_tokens_details"), "cached_tokens", cid,
                    f"{where}.prompt_tokens_details")
    return Usage(input_tokens=max(0, prompt - cached), output_tokens=output, cache_read_tokens=cached)


def _body(response: dict, cid: str) -> dict:
    """`response.body`: an object, or a JSON string holding one (an OpenAI-compatible server sends that)."""
    body = response.get("body")
    if isinstance(body, str):
        try:
            body = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise ShapeError(cid, f"response.body is {shown(body)}, expected an object") from None
    return line_object(body if body is not None else {}, cid, "response.body")


def classify_line(line: bytes) -> tuple[str, Outcome, Usage | None, str | None]:
    """Route and count one line of an output or error file (ValueError / answers.ShapeError: see common)."""
    doc, cid = custom_id_of(line)
    error = doc.get("error")
    if error:
        code = line_object(error, cid, "error").get("code")
        if code == "batch_expired":
            return cid, Outcome.EXPIRED, None, None
        if code == "batch_cancelled":
            return cid, Outcome.CANCELED, None, None
        return cid, (Outcome.ERRORED_TRANSIENT if code in TRANSIENT_ERROR_KINDS else Outcome.ERRORED), None, None
    response = line_object(doc.get("response"), cid, "response")
    status = response.get("status_code")
    if type(status) is not int:
        raise ShapeError(cid, f"response.status_code is {shown(status)}, expected an HTTP status")
    if status == 200:
        body = _body(response, cid)
        usage = _usage(line_object(body.get("usage") or {}, cid, "response.body.usage"), cid, "response.body.usage")
        return cid, Outcome.SUCCEEDED, usage, model_of(body.get("model"), cid, "response.body.model")
    if status == 429 or status >= 500:
        raw_usage = _body(response, cid).get("usage")
        billed = _usage(line_object(raw_usage, cid, "response.body.usage"), cid, "response.body.usage") if raw_usage else None
        return cid, Outcome.ERRORED_TRANSIENT, billed, None  # usage: it was billed
    return cid, Outcome.ERRORED, None, None


def metadata_tag(doc: dict) -> str | None:
    """The create tag a batch object carries in its metadata; None when it has none (not one of ours)."""
    metadata = doc.get("metadata")
    tag = metadata.get(METADATA_KEY) if isinstance(metadata, dict) else None
    return tag if isinstance(tag, str) else None


def error_items(doc: dict) -> list:
    """`errors.data` of a batch object; [] when it is not a list inside an object."""
    errs = doc.get("errors")
    data = errs.get("data") if isinstance(errs, dict) else None
    return data if isinstance(data, list) else []


def failure_text(doc: dict) -> str:
    """Why a `failed` batch failed, from `errors.data[*]` (line numbers kept)."""
    data = error_items(doc)
    parts = [(f"line {e['line']}: " if e.get("line") else "") + str(e.get("message") or e.get("code"))
             for e in data if isinstance(e, dict)]
    return "; ".join(parts) or "the batch failed (no reason given)"


TOKEN_LIMIT_CODE = "token_limit_exceeded"
_STATED = re.compile(r"Limit: ([\d,]+)")


def token_limit_of(doc: dict) -> tuple[bool, int | None]:
    """Whether a failed batch failed for its model's enqueued-token limit, and the limit its message
    states ("... Limit: 2,000,000 enqueued tokens. Please try again once some in_progress batches have
    been completed.")."""
    for e in error_items(doc):
        if isinstance(e, dict) and e.get("code") == TOKEN_LIMIT_CODE:
            m = _STATED.search(str(e.get("message") or ""))
            return True, (int(m.group(1).replace(",", "")) if m else None)
    return False, None


SPEC = ProviderSpec(
    name="openai", max_requests=50_000, max_bytes=200 * MB, default_requests=50_000, default_bytes=200 * MB,
    key_env=("OPENAI_API_KEY",), base_url_env=("OPENAI_BASE_URL",), default_base_url="https://api.openai.com",
    default_auth="bearer", model_env=("CLAUDE_MODEL", "ANTHROPIC_MODEL", "OPENAI_MODEL"),
    custom_headers_env=("OPENAI_CUSTOM_HEADERS",),
    header_env=(("OPENAI_ORG_ID", "OpenAI-Organization"), ("OPENAI_PROJECT_ID", "OpenAI-Project")),
    # OpenAI documents uniqueness only; the length bound keeps ids sane for files, shards and the ledger
    custom_id=r"[^\x00-\x1f\x7f]{1,512}", custom_id_rule="1-512 characters, no control characters",
    queue_unit="tokens", queue_start=2_000_000, queue_max=15_000_000_000)  # per model: gpt-4o-mini tier 1 .. tier 5


class OpenAIProvider(Provider):
    name = "openai"
    spec = SPEC
    body_field = "body"
    row_api = "chat"
    token_count = "tiktoken"
    count_tokens = staticmethod(count_tiktoken)

    def __init__(self, settings: Settings, http: HttpClient):
        self.settings = settings
        self.http = http
        self._files_url = join_url(settings.base_url, _FILES)
        self._url = join_url(settings.base_url, _BATCHES)

    @staticmethod
    def headers(settings: Settings) -> dict[str, str]:
        """Bearer auth; no content-type here: the upload is multipart, each call sets its own."""
        if settings.auth == "x-api-key":
            headers = {"x-api-key": settings.api_key}
        else:
            headers = {"authorization": f"Bearer {settings.api_key}"}
        return merge_headers(headers, settings.headers)

    # -- input lines ----------------------------------------------------------------------------

    def check_request(self, obj: dict, raw: bytes) -> tuple[str | None, bytes | None]:
        if "params" in obj and "body" not in obj:
            return self._convert(obj)
        body, problem = check_line(obj, self.settings.model)
        if problem:
            return problem, None
        assert body is not None
        if body is not obj["body"] or obj.keys() != _LINE_KEYS:  # model filled or extra keys: re-encode
            return None, encode({"custom_id": obj["custom_id"], "method": "POST", "url": obj["url"], "body": body})
        return None, raw

    def _convert(self, obj: dict) -> tuple[str | None, bytes | None]:
        """A Message Batches line `{custom_id, params}` as a chat-completions line."""
        params = obj["params"]
        problem = check_message_params(params, self.settings.model)
        if problem:
            return problem, None
        body, problem = chat_body_of({"model": self.settings.model, **params})
        if problem:
            return problem, None
        assert body is not None
        return None, encode({"custom_id": obj["custom_id"], "method": "POST", "url": CHAT_URL, "body": body})

    def lane_of(self, obj: dict) -> str:
        """The batch file an accepted line belongs in: one endpoint and one model each. `obj` is a line
        `check_request` accepted, in either form (its own, or the Message Batches form it converts)."""
        if "params" in obj and "body" not in obj:
            return f"{CHAT_URL} {obj['params'].get('model') or self.settings.model}"
        return f"{obj['url']} {obj['body'].get('model') or self.settings.model}"

    def body_overhead(self, line_bytes: int) -> int:
        return 1  # the newline

    # -- calls ----------------------------------------------------------------------------------

    async def create(self, lines: list[bytes], *, tag: str) -> BatchInfo:
        file_id = await self._upload(lines, tag)
        endpoint = orjson.loads(lines[0])["url"]
        body = orjson.dumps({"input_file_id": file_id, "endpoint": endpoint, "completion_window": "24h",
                             "metadata": {METADATA_KEY: tag}})
        try:
            data = await self.http.call("POST", self._url, "create", body=body, idempotent=False,
                                        headers={"content-type": "application/json"})
        except (errors.RequestRejected, errors.SpendLimited):
            await self._delete_file(file_id)  # the API answered no: surely no batch uses the file
            raise
        return self._info(document(data, "create answer"), "create answer")

    async def _upload(self, lines: list[bytes], tag: str) -> str:
        body, content_type = multipart({"purpose": "batch"}, f"{tag}.jsonl", b"\n".join(lines) + b"\n")
        data = await self.http.call("POST", self._files_url, "upload", body=body,
                                    headers={"content-type": content_type})
        file_id = text(document(data, "upload answer"), "id", "upload answer", required=True)
        assert file_id is not None
        return file_id

    async def _delete_file(self, file_id: str) -> None:
        try:
            await self.http.call("DELETE", f"{self._files_url}/{file_id}", "delete_file")
        except errors.ProviderError:
            pass  # best effort: an orphan file costs nothing

    async def get(self, batch_id: str) -> BatchInfo:
        data = await self.http.call("GET", f"{self._url}/{batch_id}", "retrieve")
        return asked_for(self._info(document(data, f"batch {batch_id}: retrieve answer"), "retrieve answer",
                                    batch_id), batch_id)

    def recent(self, since: float) -> AsyncIterator[BatchInfo]:
        return list_since(self.http, self._url, limit=LIST_LIMIT, cursor="after", since=since, info_of=self._info)

    async def cancel(self, batch_id: str) -> BatchInfo:
        data = await self.http.call("POST", f"{self._url}/{batch_id}/cancel", "cancel")
        return self._info(document(data, f"batch {batch_id}: cancel answer"), "cancel answer", batch_id)

    async def result_blocks(self, info: BatchInfo) -> AsyncIterator[list[bytes]]:
        """The output file, then the error file; either may be missing (every request failed, or none)."""
        for file_id in info.results:
            url = f"{self._files_url}/{file_id}/content"
            async for block in self.http.line_blocks(url, "results"):
                lines = [line for line in block if line.strip()]
                if lines:
                    yield lines

    classify = staticmethod(classify_line)
    realtime_api = "Chat Completions"

    async def answer_now(self, line: bytes, seen: dict[str, str]) -> bytes:
        return await openai_answer(self.http, self.settings.base_url, line, seen)

    error_line = staticmethod(openai_error_line)

    @staticmethod
    def tag_of(info: BatchInfo) -> str | None:
        """The tag `create` gave the batch, read back from its metadata (None: not created by this program).
        A provider with this method keeps tags, and the submitter adopts lost creates by tag."""
        return metadata_tag(info.raw)

    def _info(self, doc: dict, what: str = "list answer", asked: str | None = None) -> BatchInfo:
        """A batch object, each field it reads checked (answers.BadAnswer naming the batch and the field)."""
        bid = batch_id(doc, f"batch {asked}: {what}" if asked else what)
        what = f"batch {bid}: {what}"
        status = text(doc, "status", what)
        counts = request_counts(doc, OPENAI_COUNTS, what)
        files = [text(doc, "output_file_id", what), text(doc, "error_file_id", what)]
        if status in _ENDED:
            state = BatchState.ENDED
        elif status == "failed":
            state = BatchState.FAILED
        else:
            state = BatchState.IN_PROGRESS
        ended = next((doc[k] for k in ("completed_at", "expired_at", "cancelled_at", "failed_at") if doc.get(k)),
                     None)
        full, stated = token_limit_of(doc) if state is BatchState.FAILED else (False, None)
        return BatchInfo(
            id=bid, state=state, created_at=parse_time(doc.get("created_at")), ended_at=parse_time(ended),
            total=counts.get("total"), counts=counts, results=[f for f in files if f],
            error=failure_text(doc) if state is BatchState.FAILED else None, raw=doc,
            validated=status not in ("validating", "failed"), queue_full=full, stated_limit=stated,
        )
