"""The article's inline proxy (`--provider inline`; API-NOTES §3): requests inline, Anthropic-style results.

    create:  POST {base}{inline_create_path}   {"requests": [{custom_id, method, url, body}, ...]}
    poll:    GET  {base}{inline_status_path}   {"status", "progress"}
    results: GET  {base}{inline_results_path}  JSONL, the Message Batches result lines

Paths are joined with `join_url`, so the article's base URL ending in `/v1` and its paths starting
with `/v1` do not make `/v1/v1`. Input lines come in the Message Batches form `{custom_id, params}`
or already as `{custom_id, method, url, body}`; the proxy refuses `system`, so it is folded into the
first user message (prepended to its text, a blank line between; system blocks that carry
`cache_control` are kept as blocks, put first in that message's content).

States: `completed` and `expired` are ENDED (an expired batch's results carry its unprocessed
requests as `expired` lines, which are retried); `failed` is ENDED only when the status says some
requests finished (`request_counts`), else FAILED with the proxy's reason; anything else is
IN_PROGRESS.

The proxy has no list call, so `recent` yields nothing. Consequence: a create whose answer was lost
(the connection dropped after the body was sent) cannot be matched to the batch it may have made;
the chunk is sent again. Results stay exactly-once (only the recorded batch is collected), but the
lost batch, if it exists, is paid for and never read. Polling falls back to one retrieve per batch.
The proxy has no cancel call either: `cancel` says so without calling it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from batch_scheduler.core import errors
from batch_scheduler.core.http import HttpClient
from batch_scheduler.core.settings import MB, ProviderSpec, Settings, join_url
from batch_scheduler.providers.answers import ANTHROPIC_COUNTS, asked_for, batch_id, document, text
from batch_scheduler.providers.answers import counts as request_counts
from batch_scheduler.providers.base import BatchInfo, BatchState, Provider, encode, parse_time, requests_body
from batch_scheduler.providers.common import auth_headers, check_message_params, classify_result

MESSAGES_URL = "/v1/messages"
_LINE_KEYS = frozenset({"custom_id", "method", "url", "body"})


def fold_system(body: dict, where: str) -> tuple[dict | None, str | None]:
    """The body with `system` prepended to the first user message's text (the proxy refuses `system`)."""
    system = body.get("system")
    rest = {k: v for k, v in body.items() if k != "system"}
    if not system:
        return rest, None
    if isinstance(system, list):
        texts = [b.get("text") for b in system if isinstance(b, dict)]
        if not all(isinstance(t, str) for t in texts) or len(texts) != len(system):
            return None, f"{where}.system must be a string or a list of text blocks"
        if any("cache_control" in b for b in system):
            return _prepend(rest, system, where)  # blocks kept, so their cache_control still applies
        system = "\n\n".join(t for t in texts if isinstance(t, str))
    if not isinstance(system, str):
        return None, f"{where}.system must be a string or a list of text blocks"
    messages = body.get("messages")
    if not isinstance(messages, list):
        return None, f"{where}.messages must be a list"
    for i, msg in enumerate(messages):
        if isinstance(msg, dict) and msg.get("role") == "user":
            content = msg.get("content")
            if isinstance(content, str):
                content = f"{system}\n\n{content}"
            elif isinstance(content, list):
                content = [{"type": "text", "text": system}, *content]
            else:
                return None, f"{where}.messages[{i}].content must be a string or a list of blocks"
            rest["messages"] = [*messages[:i], {**msg, "content": content}, *messages[i + 1:]]
            return rest, None
    return None, f"{where}.system given but no user message to fold it into (the proxy refuses system)"


def _prepend(body: dict, blocks: list, where: str) -> tuple[dict | None, str | None]:
    """The system blocks put first in the first user message's content (a list of blocks)."""
    messages = body.get("messages")
    if not isinstance(messages, list):
        return None, f"{where}.messages must be a list"
    for i, msg in enumerate(messages):
        if isinstance(msg, dict) and msg.get("role") == "user":
            content = msg.get("content")
            if isinstance(content, str):
                content = [{"type": "text", "text": content}]
            if not isinstance(content, list):
                return None, f"{where}.messages[{i}].content must be a string or a list of blocks"
            return {**body, "messages": [*messages[:i], {**msg, "content": [*blocks, *content]}, *messages[i + 1:]]}, None
    return None, f"{where}.system given but no user message to fold it into (the proxy refuses system)"


SPEC = ProviderSpec(
    name="inline", max_requests=10_000, max_bytes=256 * MB, default_requests=5_000, default_bytes=200 * MB,
    key_env=("ANTHROPIC_API_KEY", "CLAUDE_API_KEY"), base_url_env=("ANTHROPIC_BASE_URL", "CLAUDE_BASE_URL"),
    default_base_url="https://api.anthropic.com", default_auth="bearer", token_env=("ANTHROPIC_AUTH_TOKEN",),
    custom_headers_env=("ANTHROPIC_CUSTOM_HEADERS",),
    queue_unit="requests", queue_start=200_000, queue_max=500_000)  # no figures of its own: its upstream's


class InlineProvider(Provider):
    name = "inline"
    spec = SPEC
    body_field = "body"

    def __init__(self, settings: Settings, http: HttpClient):
        self.settings = settings
        self.http = http
        self._create_url = join_url(settings.base_url, settings.inline_create_path)
        self._status_url = join_url(settings.base_url, settings.inline_status_path)
        self._results_url = join_url(settings.base_url, settings.inline_results_path)

    @staticmethod
    def headers(settings: Settings) -> dict[str, str]:
        return auth_headers(settings)  # Bearer unless --auth x-api-key; plus --header (Bypass-Middleware)

    # -- input lines ----------------------------------------------------------------------------

    def check_request(self, obj: dict, raw: bytes) -> tuple[str | None, bytes | None]:
        if "params" in obj and "body" not in obj:
            body, where = obj["params"], "params"
        else:
            if obj.get("method", "POST") != "POST":
                return f"method must be POST (got {obj.get('method')!r})", None
            if obj.get("url", MESSAGES_URL) != MESSAGES_URL:
                return f"url {obj.get('url')!r}: the inline proxy takes only {MESSAGES_URL}", None
            body, where = obj.get("body"), "body"
        problem = check_message_params(body, self.settings.model, where)
        if problem:
            return problem, None
        if where == "body" and "system" not in body and "model" in body and obj.keys() == _LINE_KEYS:
            return None, raw
        folded, problem = fold_system(body, where)
        if problem:
            return problem, None
        assert folded is not None
        if "model" not in folded:
            folded = {"model": self.settings.model, **folded}
        return None, encode({"custom_id": obj["custom_id"], "method": "POST", "url": MESSAGES_URL, "body": folded})

    def body_overhead(self, line_bytes: int) -> int:
        return 1  # the comma between requests

    # -- calls ----------------------------------------------------------------------------------

    def _url_of(self, template: str, batch_id: str) -> str:
        return template.replace("{id}", batch_id)

    async def create(self, lines: list[bytes], *, tag: str) -> BatchInfo:
        body = requests_body(lines)
        data = await self.http.call("POST", self._create_url, "create", body=body, idempotent=False)
        return self._info(document(data, "create answer"), "create answer")

    async def get(self, batch_id: str) -> BatchInfo:
        data = await self.http.call("GET", self._url_of(self._status_url, batch_id), "retrieve")
        return asked_for(self._info(document(data, f"batch {batch_id}: retrieve answer"), "retrieve answer",
                                    batch_id), batch_id)

    async def recent(self, since: float) -> AsyncIterator[BatchInfo]:
        """Nothing: the proxy cannot list batches (see the module docstring for what that costs)."""
        return
        yield  # an async generator that yields nothing

    async def cancel(self, batch_id: str) -> BatchInfo:
        raise errors.RequestRejected(f"the inline proxy has no cancel call: batch {batch_id} runs to its end "
                                     f"(no new batch of the job is sent)")

    async def result_blocks(self, info: BatchInfo) -> AsyncIterator[list[bytes]]:
        async for block in self.http.line_blocks(self._url_of(self._results_url, info.id), "results"):
            lines = [line for line in block if line.strip()]
            if lines:
                yield lines

    classify = staticmethod(classify_result)

    def _info(self, doc: dict, what: str = "status answer", asked: str | None = None) -> BatchInfo:
        """A batch object, each field it reads checked (answers.BadAnswer naming the batch and the field)."""
        bid = batch_id(doc, f"batch {asked}: {what}" if asked else what)
        what = f"batch {bid}: {what}"
        status = text(doc, "status", what)
        counts = request_counts(doc, ANTHROPIC_COUNTS, what)
        finished = sum(v for k, v in counts.items() if k != "processing")
        if status in ("completed", "expired") or (status == "failed" and finished):
            state = BatchState.ENDED
        elif status == "failed":
            state = BatchState.FAILED
        else:
            state = BatchState.IN_PROGRESS
        error = None
        if state is BatchState.FAILED:
            err = doc.get("error") or doc.get("errors") or doc.get("message")
            error = str(err.get("message", err)) if isinstance(err, dict) else str(err or "the proxy failed the batch")
        return BatchInfo(
            id=bid, state=state, created_at=parse_time(doc.get("created_at")),
            ended_at=parse_time(doc.get("ended_at")), total=sum(counts.values()) or None,
            counts=counts, error=error, raw=doc,
        )
