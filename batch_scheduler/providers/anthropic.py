"""Anthropic Message Batches (`--provider anthropic`, the default)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import orjson

from batch_scheduler.core.http import HttpClient
from batch_scheduler.core.settings import Settings, join_url
from batch_scheduler.providers.base import (
    TRANSIENT_ERROR_KINDS,
    BatchInfo,
    BatchState,
    Outcome,
    encode,
    parse_time,
    requests_body,
)

_PATH = "/v1/messages/batches"
_REQUIRED = ("max_tokens", "messages")


def auth_headers(settings: Settings) -> dict[str, str]:
    headers = {"content-type": "application/json"}
    if settings.auth == "bearer":
        headers["authorization"] = f"Bearer {settings.api_key}"
    else:
        headers["x-api-key"] = settings.api_key
    headers.update(dict(settings.headers))
    return headers


def check_message_params(params: object, model: str | None, prefix: str = "params") -> str | None:
    """The fields a Messages request cannot do without; None when it has them."""
    if not isinstance(params, dict):
        return f"{prefix} missing or not an object"
    if "model" not in params and not model:
        return f"{prefix}.model missing (give --model or CLAUDE_MODEL to fill it)"
    for name in _REQUIRED:
        if name not in params:
            return f"{prefix}.{name} missing"
    if params.get("stream"):
        return f"{prefix}.stream is not allowed in a batch"
    return None


def same_origin(a: str, b: str) -> bool:
    pa, pb = urlsplit(a), urlsplit(b)
    return (pa.scheme, pa.netloc) == (pb.scheme, pb.netloc)


def classify_result(line: bytes) -> tuple[str, Outcome, tuple[int, int, int, int] | None, str | None]:
    """Route and count one `{"custom_id", "result": {...}}` line (also the inline proxy's form)."""
    doc = orjson.loads(line)
    cid = doc["custom_id"]
    result = doc["result"]
    kind = result["type"]
    if kind == "succeeded":
        message = result["message"]
        u = message.get("usage") or {}
        usage = (u.get("input_tokens") or 0, u.get("output_tokens") or 0,  # a Usage, as a plain tuple
                 u.get("cache_creation_input_tokens") or 0, u.get("cache_read_input_tokens") or 0)
        return cid, Outcome.SUCCEEDED, usage, message.get("model")
    if kind == "errored":
        err = result.get("error") or {}
        inner = err.get("error") if isinstance(err.get("error"), dict) else err
        transient = inner.get("type") in TRANSIENT_ERROR_KINDS
        return cid, (Outcome.ERRORED_TRANSIENT if transient else Outcome.ERRORED), None, None
    if kind == "expired":
        return cid, Outcome.EXPIRED, None, None
    if kind == "canceled":
        return cid, Outcome.CANCELED, None, None
    raise ValueError(f"unknown result type {kind!r}")


class AnthropicProvider:
    name = "anthropic"

    def __init__(self, settings: Settings, http: HttpClient):
        self.settings = settings
        self.http = http
        self._url = join_url(settings.base_url, _PATH)
        self._model_bytes = orjson.dumps(settings.model) if settings.model else None

    @staticmethod
    def headers(settings: Settings) -> dict[str, str]:
        headers = auth_headers(settings)
        headers["anthropic-version"] = settings.anthropic_version
        return headers

    def check_request(self, obj: dict, raw: bytes) -> tuple[str | None, bytes | None]:
        params = obj.get("params")
        if (type(params) is dict and len(obj) == 2 and "model" in params and "max_tokens" in params
                and "messages" in params and not params.get("stream")):
            return None, raw  # the common case, sent as it came (the checks below, inlined)
        problem = check_message_params(params, self.settings.model)
        if problem:
            return problem, None
        if len(obj) != 2 or "model" not in params:  # extra keys, or the model to fill: re-encode
            if "model" not in params:
                params = {"model": self.settings.model, **params}
            return None, encode({"custom_id": obj["custom_id"], "params": params})
        return None, raw

    def body_overhead(self, line_bytes: int) -> int:
        return 1  # the comma between requests

    async def create(self, lines: list[bytes], *, tag: str) -> BatchInfo:
        body = requests_body(lines)
        data = await self.http.call("POST", self._url, "create", body=body, idempotent=False)
        return self._info(orjson.loads(data))

    async def get(self, batch_id: str) -> BatchInfo:
        data = await self.http.call("GET", f"{self._url}/{batch_id}", "retrieve")
        return self._info(orjson.loads(data))

    async def recent(self, since: float) -> AsyncIterator[BatchInfo]:
        after: str | None = None
        while True:
            url = f"{self._url}?limit=1000" + (f"&after_id={after}" if after else "")
            page = orjson.loads(await self.http.call("GET", url, "list"))
            for item in page.get("data", []):
                info = self._info(item)
                if info.created_at is not None and info.created_at < since:
                    return
                yield info
            if not page.get("has_more") or not page.get("last_id"):
                return
            after = page["last_id"]

    async def cancel(self, batch_id: str) -> BatchInfo:
        data = await self.http.call("POST", f"{self._url}/{batch_id}/cancel", "cancel")
        return self._info(orjson.loads(data))

    async def result_blocks(self, info: BatchInfo) -> AsyncIterator[list[bytes]]:
        url = f"{self._url}/{info.id}/results"
        given = info.results[0] if info.results else None
        if given and same_origin(given, self._url):
            url = given  # never send the key to another host than the one configured
        async for block in self.http.line_blocks(url, "results"):
            yield block

    classify = staticmethod(classify_result)

    def _info(self, doc: dict) -> BatchInfo:
        status = doc.get("processing_status")
        counts = doc.get("request_counts") or {}
        state = BatchState.ENDED if status == "ended" else BatchState.IN_PROGRESS
        url = doc.get("results_url")
        return BatchInfo(
            id=doc["id"], state=state, created_at=parse_time(doc.get("created_at")),
            ended_at=parse_time(doc.get("ended_at")), total=sum(int(v or 0) for v in counts.values()),
            counts=counts, results=[url] if url else [], raw=doc,
        )
