"""Anthropic Message Batches (`--provider anthropic`, the default).

A request line is checked against what its job's `anthropic-version` accepts (versions.py)
before it joins a batch: the API itself checks params only while processing, hours later.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import orjson

from batch_scheduler.core.http import HttpClient
from batch_scheduler.core.settings import MB, ProviderSpec, Settings, join_url
from batch_scheduler.providers.answers import ANTHROPIC_COUNTS, asked_for, batch_id, document, text
from batch_scheduler.providers.answers import counts as request_counts
from batch_scheduler.providers.anthropic.plain import plain_check
from batch_scheduler.providers.anthropic.versions import KNOWN_VERSIONS, params_check
from batch_scheduler.providers.base import BatchInfo, BatchState, Provider, RequestsBody, encode, parse_time
from batch_scheduler.providers.common import (
    auth_headers,
    check_message_params,
    classify_result,
    list_since,
    same_origin,
)
from batch_scheduler.providers.counting import count_tokens_api
from batch_scheduler.providers.realtime import messages_answer, messages_error_line

log = logging.getLogger("batch_scheduler.providers")

_PATH = "/v1/messages/batches"


SPEC = ProviderSpec(
    name="anthropic", max_requests=100_000, max_bytes=256 * MB, default_requests=10_000, default_bytes=200 * MB,
    key_env=("ANTHROPIC_API_KEY", "CLAUDE_API_KEY"), base_url_env=("ANTHROPIC_BASE_URL", "CLAUDE_BASE_URL"),
    default_base_url="https://api.anthropic.com", default_auth="x-api-key", token_env=("ANTHROPIC_AUTH_TOKEN",),
    custom_headers_env=("ANTHROPIC_CUSTOM_HEADERS",),
    queue_unit="requests", queue_start=200_000, queue_max=500_000)  # requests queued per organisation, by tier


class AnthropicProvider(Provider):
    name = "anthropic"
    spec = SPEC
    sends_anthropic_version = True
    token_count = "count_tokens"
    count_tokens = staticmethod(count_tokens_api)
    realtime_api = "Messages"

    def __init__(self, settings: Settings, http: HttpClient):
        self.settings = settings
        self.http = http
        self._url = join_url(settings.base_url, _PATH)
        self._model_bytes = orjson.dumps(settings.model) if settings.model else None
        self._params_problem = params_check(settings.anthropic_version)
        self.plain_check = plain_check(settings.anthropic_version)
        if settings.anthropic_version not in KNOWN_VERSIONS:
            log.warning("anthropic-version %s is not one this program knows (%s): its lines are checked only for "
                        "what every version requires", settings.anthropic_version, ", ".join(KNOWN_VERSIONS))

    @staticmethod
    def headers(settings: Settings) -> dict[str, str]:
        headers = auth_headers(settings)
        headers["anthropic-version"] = settings.anthropic_version
        return headers

    def check_request(self, obj: dict, raw: bytes) -> tuple[str | None, bytes | None]:
        params = obj.get("params")
        if (type(params) is dict and len(obj) == 2 and "model" in params and "max_tokens" in params
                and "messages" in params and not params.get("stream")):
            problem = self._params_problem(params)
            return (problem, None) if problem else (None, raw)  # the common case, sent as it came
        problem = check_message_params(params, self.settings.model)
        if problem or not isinstance(params, dict):
            return problem or "params must be an object", None
        problem = self._params_problem(params)
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
        data = await self.http.call("POST", self._url, "create", body=RequestsBody(lines), idempotent=False)
        return self._info(document(data, "create answer"), "create answer")

    async def get(self, batch_id: str) -> BatchInfo:
        data = await self.http.call("GET", f"{self._url}/{batch_id}", "retrieve")
        return asked_for(self._info(document(data, f"batch {batch_id}: retrieve answer"), "retrieve answer",
                                    batch_id), batch_id)

    def recent(self, since: float) -> AsyncIterator[BatchInfo]:
        return list_since(self.http, self._url, limit=1000, cursor="after_id", since=since, info_of=self._info)

    async def cancel(self, batch_id: str) -> BatchInfo:
        data = await self.http.call("POST", f"{self._url}/{batch_id}/cancel", "cancel")
        return self._info(document(data, f"batch {batch_id}: cancel answer"), "cancel answer", batch_id)

    async def result_blocks(self, info: BatchInfo) -> AsyncIterator[list[bytes]]:
        url = f"{self._url}/{info.id}/results"
        given = info.results[0] if info.results else None
        if given and same_origin(given, self._url):
            url = given  # never send the key to another host than the one configured
        async for block in self.http.line_blocks(url, "results"):
            yield block

    classify = staticmethod(classify_result)

    async def answer_now(self, line: bytes, seen: dict[str, str]) -> bytes:
        return await messages_answer(self.http, self.settings.base_url, line, seen)

    error_line = staticmethod(messages_error_line)

    def _info(self, doc: dict, what: str = "list answer", asked: str | None = None) -> BatchInfo:
        """A batch object, each field it reads checked (answers.BadAnswer naming the batch and the field)."""
        bid = batch_id(doc, f"batch {asked}: {what}" if asked else what)
        what = f"batch {bid}: {what}"
        state = BatchState.ENDED if text(doc, "processing_status", what) == "ended" else BatchState.IN_PROGRESS
        counts = request_counts(doc, ANTHROPIC_COUNTS, what)
        url = text(doc, "results_url", what)
        return BatchInfo(
            id=bid, state=state, created_at=parse_time(doc.get("created_at")),
            ended_at=parse_time(doc.get("ended_at")), total=sum(counts.values()),
            counts=counts, results=[url] if url else [], raw=doc,
        )
