"""OpenAI Batch (`--provider openai`; API-NOTES §2): upload a JSONL file, create a batch on it, read two files.

    create:  POST /v1/files (multipart, purpose=batch)  ->  POST /v1/batches {input_file_id, endpoint, ...}
    poll:    GET /v1/batches/{id}, GET /v1/batches?after= (newest first)
    results: GET /v1/files/{output_file_id}/content, then GET /v1/files/{error_file_id}/content

The paths, the upload's purpose, the lines' form, the create body, the status spellings, the
wrapping of a create answer and the list's paging come from the class's `profile` (profile.py):
OpenAI's here, Azure's, Groq's and Together's in like.py, the same class otherwise.
Input lines and result lines are read in lines.py. One batch file has one endpoint and one
model: `lane_of` names a line's pair, and the batcher keeps one open batch per pair
(`job.batcher`), so a job may mix models and endpoints and no batch does.

The upload is safe to repeat (an orphan file costs nothing and is deleted when the create is
refused outright); the create is not (`idempotent=False`: a lost answer is an unknown outcome). The
create tag (job and chunk) goes into the batch's metadata under `batch_scheduler`; `tag_of` reads it
back, so adoption of a lost create goes by it and jobs sharing an account never take each other's batches.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable
from typing import ClassVar

import orjson

from batch_scheduler.core import errors
from batch_scheduler.core.headers import merge_headers
from batch_scheduler.core.http import HttpClient
from batch_scheduler.core.settings import MB, ProviderSpec, Settings, join_url
from batch_scheduler.providers.answers import asked_for, batch_id, document, mapping, text
from batch_scheduler.providers.answers import counts as request_counts
from batch_scheduler.providers.base import BatchInfo, BatchState, Provider, encode, parse_time
from batch_scheduler.providers.common import check_message_params
from batch_scheduler.providers.counting import count_tiktoken
from batch_scheduler.providers.openai.lines import (
    CHAT_URL,
    chat_body_of,
    check_line,
    classify_line,
    multipart,
)
from batch_scheduler.providers.openai.listing import list_batches
from batch_scheduler.providers.openai.profile import Profile
from batch_scheduler.providers.realtime import openai_answer, openai_error_line

_LINE_KEYS = frozenset({"custom_id", "method", "url", "body"})
OPENAI_COUNTS = ("total", "completed", "failed")  # the request_counts entries read
METADATA_KEY = "batch_scheduler"  # where the create tag is kept in a batch's metadata


def metadata_tag(doc: dict) -> str | None:
    """The create tag a batch object carries in its metadata; None when it has none (not one of ours)."""
    metadata = doc.get("metadata")
    tag = metadata.get(METADATA_KEY) if isinstance(metadata, dict) else None
    return tag if isinstance(tag, str) else None


def batch_tag(info: BatchInfo) -> str | None:
    """The tag `create` gave the batch (None: not created by this program)."""
    return metadata_tag(info.raw)


def error_items(doc: dict) -> list:
    """`errors.data` of a batch object, or `errors` itself when it is a bare list (Groq's guide shows
    one); [] for anything else."""
    errs = doc.get("errors")
    data = errs.get("data") if isinstance(errs, dict) else errs
    return data if isinstance(data, list) else []


def failure_text(doc: dict) -> str:
    """Why a `failed` batch failed, from `errors.data[*]` (line numbers kept)."""
    data = error_items(doc)
    parts = [(f"line {e['line']}: " if e.get("line") else "") + str(e.get("message") or e.get("code"))
             for e in data if isinstance(e, dict)]
    if not parts and isinstance(doc.get("error"), str) and doc["error"]:
        parts = [doc["error"]]  # Together: the job's `error` string
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
    profile = Profile()
    body_field = "body"
    row_api = "chat"
    token_count: ClassVar[str | None] = "tiktoken"
    count_tokens = staticmethod(count_tiktoken)

    def __init__(self, settings: Settings, http: HttpClient):
        self.settings = settings
        self.http = http
        self._files_url = join_url(settings.base_url, self.profile.files_path)
        self._url = join_url(settings.base_url, self.profile.batches_path)

    @staticmethod
    def headers(settings: Settings) -> dict[str, str]:
        """The key as --auth says (bearer, x-api-key, or Azure's api-key); no content-type here: the
        upload is multipart, each call sets its own."""
        if settings.auth in ("x-api-key", "api-key"):
            headers = {settings.auth: settings.api_key}
        else:
            headers = {"authorization": f"Bearer {settings.api_key}"}
        return merge_headers(headers, settings.headers)

    # -- input lines ----------------------------------------------------------------------------

    def check_request(self, obj: dict, raw: bytes) -> tuple[str | None, bytes | None]:
        if "params" in obj and "body" not in obj:
            return self._convert(obj)
        body, problem = check_line(obj, self.settings.model, self.profile.endpoint_without_v1)
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
        profile = self.profile
        first = orjson.loads(lines[0])
        file_id = await self._upload(lines, tag)
        doc: dict = {"input_files": [file_id]} if profile.input_files else {"input_file_id": file_id}
        doc["endpoint"] = profile.create_endpoint(first["url"])
        if profile.completion_window:
            doc["completion_window"] = profile.completion_window
        if profile.model_field:
            doc[profile.model_field] = first["body"].get("model")
        if profile.keeps_metadata:
            doc["metadata"] = {METADATA_KEY: tag}
        try:
            data = await self.http.call("POST", self._url, "create", body=orjson.dumps(doc), idempotent=False,
                                        headers={"content-type": "application/json"})
        except (errors.RequestRejected, errors.SpendLimited):
            await self._delete_file(file_id)  # the API answered no: surely no batch uses the file
            raise
        answer = document(data, "create answer")
        if profile.create_wrap and profile.create_wrap in answer:  # Together: {"job": {...}, "warning": ...}
            answer = mapping(answer, profile.create_wrap, "create answer")
        return self._info(answer, "create answer")

    def _file_lines(self, lines: list[bytes]) -> bytes:
        """The uploaded file: the lines as they are, or (`line_form` body) each as `{custom_id, body}`."""
        if self.profile.line_form == "body":
            lines = [encode({"custom_id": o["custom_id"], "body": o["body"]}) for o in map(orjson.loads, lines)]
        return b"\n".join(lines) + b"\n"

    async def _upload(self, lines: list[bytes], tag: str) -> str:
        body, content_type = multipart({"purpose": self.profile.purpose}, f"{tag}.jsonl", self._file_lines(lines))
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
        return list_batches(self.http, self._url, self.profile.list_style, since=since, info_of=self._info)

    async def cancel(self, batch_id: str) -> BatchInfo:
        data = await self.http.call("POST", f"{self._url}/{batch_id}/cancel", "cancel")
        return self._info(document(data, f"batch {batch_id}: cancel answer"), "cancel answer", batch_id)

    async def result_blocks(self, info: BatchInfo) -> AsyncIterator[list[bytes]]:
        """The output file, then the error file; either may be missing (every request failed, or none)
        or empty (Azure's error file of a batch without errors)."""
        for file_id in info.results:
            url = f"{self._files_url}/{file_id}/content"
            async for block in self.http.line_blocks(url, "results"):
                lines = [line for line in block if line.strip()]
                if lines:
                    yield lines

    classify = staticmethod(classify_line)
    realtime_api: ClassVar[str | None] = "Chat Completions"

    async def answer_now(self, line: bytes, seen: dict[str, str]) -> bytes:
        return await openai_answer(self.http, self.settings.base_url, line, seen)

    error_line = staticmethod(openai_error_line)

    # the tag `create` gave a batch, read back from its metadata: the submitter adopts lost creates by it
    tag_of: Callable[[BatchInfo], str | None] | None = staticmethod(batch_tag)

    def _info(self, doc: dict, what: str = "list answer", asked: str | None = None) -> BatchInfo:
        """A batch object, each field it reads checked (answers.BadAnswer naming the batch and the field).
        Statuses in any case; times as epoch seconds or ISO-8601; counts may be null."""
        bid = batch_id(doc, f"batch {asked}: {what}" if asked else what)
        what = f"batch {bid}: {what}"
        status = text(doc, "status", what)
        counts = request_counts(doc, OPENAI_COUNTS, what)
        files = [text(doc, "output_file_id", what), text(doc, "error_file_id", what)]
        state = self.profile.state_of(status, what)
        ended = next((doc[k] for k in ("completed_at", "expired_at", "cancelled_at", "failed_at") if doc.get(k)),
                     None)
        full, stated = token_limit_of(doc) if state is BatchState.FAILED else (False, None)
        return BatchInfo(
            id=bid, state=state, created_at=parse_time(doc.get("created_at")), ended_at=parse_time(ended),
            total=counts.get("total"), counts=counts, results=[f for f in files if f],
            error=failure_text(doc) if state is BatchState.FAILED else None, raw=doc,
            validated=self.profile.validated(status), queue_full=full, stated_limit=stated,
        )
