"""Exact input-token counts of a sample of requests, the providers' `count_tokens` hooks.

Anthropic counts through its free `POST /v1/messages/count_tokens` (a key is needed); OpenAI's requests
are counted locally with `tiktoken` (the optional extra `batch-scheduler[tiktoken]`), which downloads
its BPE files from the internet at first use. Each returns (counts, None) or ([], why not), never
raises for a failure of the count itself: the estimate then stands on its heuristic alone.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson

from batch_scheduler.core import errors
from batch_scheduler.core.http import HttpClient
from batch_scheduler.core.settings import RetryPolicy, Settings, join_url
from batch_scheduler.providers.base import TokenCounts

COUNT_RETRY = RetryPolicy(attempts=3, deadline_s=30.0, initial_wait_s=0.5, max_wait_s=5.0)
COUNT_CONCURRENCY = 4
COUNT_FIELDS = ("model", "messages", "system", "tools", "tool_choice", "thinking")  # what count_tokens takes


async def count_tokens_api(settings: Settings, bodies: list[dict], headers: dict[str, str]) -> TokenCounts:
    """Anthropic's count_tokens, a few calls at a time."""
    if not settings.api_key:
        return [], "no API key to call count_tokens with"
    url = join_url(settings.base_url, "/v1/messages/count_tokens")
    gate = asyncio.Semaphore(COUNT_CONCURRENCY)
    counts = [0] * len(bodies)
    async with HttpClient(headers, COUNT_RETRY, timeout_s=30.0, secret=settings.api_key) as http:

        async def one(i: int) -> None:
            body = {k: bodies[i][k] for k in COUNT_FIELDS if k in bodies[i]}
            body.setdefault("model", settings.model)
            async with gate:
                answer = orjson.loads(await http.call("POST", url, "count_tokens", body=orjson.dumps(body)))
            counts[i] = int(answer["input_tokens"])

        try:
            async with asyncio.TaskGroup() as tg:
                for i in range(len(bodies)):
                    tg.create_task(one(i))
        except BaseExceptionGroup as eg:
            first = first_failure(eg)
            if not isinstance(first, errors.ProviderError | KeyError | TypeError | ValueError):
                raise
            return [], f"count_tokens failed ({http.redact(str(first))}): the heuristic alone"
    return counts, None


def first_failure(eg: BaseExceptionGroup) -> BaseException:
    for exc in eg.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            return first_failure(exc)
        if not isinstance(exc, asyncio.CancelledError):
            return exc
    return eg.exceptions[0]


async def count_tiktoken(settings: Settings, bodies: list[dict], headers: dict[str, str]) -> TokenCounts:
    """OpenAI's requests counted with tiktoken, off the event loop (it may read or download BPE files)."""
    return await asyncio.to_thread(_tiktoken_counts, bodies)


def _tiktoken_counts(bodies: list[dict]) -> TokenCounts:
    """Exact OpenAI counts: chat messages as the OpenAI cookbook counts them (3 tokens a message plus
    its text, 3 to prime the answer), `input` / `prompt` as their text."""
    try:
        import tiktoken
    except ImportError:
        return [], "tiktoken is not installed (pip install 'batch-scheduler[tiktoken]'): the heuristic alone"
    try:
        encodings: dict[str, Any] = {}
        counts = []
        for body in bodies:
            model = str(body.get("model") or "")
            if model not in encodings:
                try:
                    encodings[model] = tiktoken.encoding_for_model(model)
                except KeyError:  # a model tiktoken does not know: the current models' encoding
                    encodings[model] = tiktoken.get_encoding("o200k_base")
            counts.append(_openai_tokens(body, encodings[model]))
    except Exception as exc:  # noqa: BLE001 - any failure to load BPE files (no network) leaves the heuristic
        return [], (f"tiktoken could not load its encoding ({type(exc).__name__}; it downloads its BPE files "
                    f"from the internet at first use): the heuristic alone")
    return counts, None


def _openai_tokens(body: dict, enc: Any) -> int:
    def text(value: Any) -> str:
        if isinstance(value, str):
            return value
        if isinstance(value, list):
            return "".join(text(v) for v in value)
        if isinstance(value, dict):
            return text(value.get("text") if "text" in value else value.get("content"))
        return ""

    if isinstance(body.get("messages"), list):
        return 3 + sum(3 + len(enc.encode(text(m.get("content")))) + len(enc.encode(str(m.get("role", ""))))
                       for m in body["messages"] if isinstance(m, dict))
    return len(enc.encode(text(body.get("input", body.get("prompt")))))
