"""The realtime endpoints: Anthropic `POST /v1/messages` and OpenAI `POST /v1/chat/completions`.

One answer per call, after `realtime_latency_s` (wall clock), shaped as the official SDKs' `Message`
and `ChatCompletion`. Requests per minute per key are limited by `realtime_rpm` (None: no limit) over
a sliding minute (`realtime_window_s`) of the simulator clock; every answer carries the provider's rate-limit headers
(Anthropic `anthropic-ratelimit-requests-{limit,remaining,reset}`, OpenAI
`x-ratelimit-{limit,remaining,reset}-requests`), and a call over the limit is a 429 `rate_limit_error`
with `retry-after`. Usage comes from counting.py as for a batch, prompt caching included: a request's
cache write becomes readable when its answer is given (after the latency), not when it arrives.
"""

from __future__ import annotations

import asyncio
import math
import zlib
from collections import deque
from typing import Any

import orjson
from aiohttp import web

from batch_scheduler.simulator.context import SimContext
from batch_scheduler.simulator.counting import json_tokens, prompt_tokens
from batch_scheduler.simulator.responses import Rejected, json_response, parse_json, read_body
from batch_scheduler.simulator.store import new_id, output_tokens, rfc3339
from batch_scheduler.simulator.validation import LEGACY_VERSION, params_problem

MESSAGES_PATH = "/v1/messages"
CHAT_PATH = "/v1/chat/completions"


class RealtimeApi:
    def __init__(self, ctx: SimContext):
        self.ctx = ctx
        self._calls: dict[str, deque[float]] = {}  # key -> clock times of its calls in the last minute

    def routes(self) -> list[tuple[str, str, str, Any, bool]]:
        """(method, path, call name, handler, is_create)."""
        return [("POST", MESSAGES_PATH, "anthropic.messages", self.messages, False),
                ("POST", CHAT_PATH, "openai.chat", self.chat, False)]

    def _admit(self, request: web.Request, openai: bool) -> dict[str, str]:
        """Count the call against its key's minute: the rate-limit headers, or a 429 carrying them."""
        ctx, limit, span = self.ctx, self.ctx.config.realtime_rpm, self.ctx.config.realtime_window_s
        now = ctx.now()
        key = request.headers.get("x-api-key") or request.headers.get("authorization") or ""
        window = self._calls.setdefault(key, deque())
        while window and window[0] <= now - span:
            window.popleft()
        if limit is None:
            return {}
        reset_s = (window[0] + span - now) if window else span
        over = len(window) >= limit
        if not over:
            window.append(now)
        remaining = max(0, limit - len(window))
        if openai:
            headers = {"x-ratelimit-limit-requests": str(limit), "x-ratelimit-remaining-requests": str(remaining),
                       "x-ratelimit-reset-requests": f"{reset_s:.3f}s"}
        else:
            headers = {"anthropic-ratelimit-requests-limit": str(limit),
                       "anthropic-ratelimit-requests-remaining": str(remaining),
                       "anthropic-ratelimit-requests-reset": rfc3339(ctx.wall_time() + reset_s) or ""}
        if over:
            ctx.stats["realtime_rate_limited"] += 1
            raise Rejected("rate_limit_error", f"Number of requests has exceeded your rate limit of {limit} "
                           f"requests per minute", headers={**headers, "retry-after": str(math.ceil(reset_s))})
        return headers

    async def _answered(self) -> None:
        self.ctx.stats["realtime_calls"] += 1
        if self.ctx.config.realtime_latency_s > 0:
            await asyncio.sleep(self.ctx.config.realtime_latency_s)

    async def messages(self, request: web.Request) -> web.Response:
        params = parse_json(await read_body(request, self.ctx.config.max_body_bytes))
        if type(params) is not dict:
            raise Rejected("invalid_request_error", "Input should be a valid dictionary")
        problem = params_problem(params, request.headers.get("anthropic-version", LEGACY_VERSION))
        if problem:
            raise Rejected("invalid_request_error", problem)
        if params.get("stream"):
            raise Rejected("invalid_request_error", "stream: the simulator answers whole messages only")
        headers = self._admit(request, openai=False)
        total, marked = prompt_tokens(params)
        five = hour = read = 0
        if marked and self.ctx.config.cache_as_measured:  # read on arrival; written once the answer is given
            ready_at = self.ctx.now() + self.ctx.config.realtime_latency_s
            five, hour, read = self.ctx.prompt_cache.split(params, total, self.ctx.now(), ready_at)
        await self._answered()
        if marked and not self.ctx.config.cache_as_measured:  # the write is readable once this answer is given
            five, hour, read = self.ctx.prompt_cache.split(params, total, self.ctx.now())
        total -= five + hour + read
        seed = _seed_of(params)
        out = output_tokens(seed, int(params["max_tokens"]))
        self._bill(total, out, five, hour, read)
        doc = {"id": new_id("msg_"), "type": "message", "role": "assistant", "model": params["model"],
               "content": [{"type": "text", "text": f"answer:{seed}", "citations": None}],
               "stop_reason": "end_turn", "stop_sequence": None,
               "usage": {"input_tokens": total, "output_tokens": out, "cache_creation_input_tokens": five + hour,
                         "cache_read_input_tokens": read, "server_tool_use": None, "service_tier": "standard",
                         "cache_creation": {"ephemeral_5m_input_tokens": five, "ephemeral_1h_input_tokens": hour}}}
        return json_response(doc, headers=headers)

    async def chat(self, request: web.Request) -> web.Response:
        body = parse_json(await read_body(request, self.ctx.config.max_body_bytes))
        if type(body) is not dict:
            raise Rejected("invalid_request_error", "We could not parse the JSON body of your request.")
        if not isinstance(body.get("model"), str) or not body["model"]:
            raise Rejected("invalid_request_error", "you must provide a model parameter")
        if not isinstance(body.get("messages"), list) or not body["messages"]:
            raise Rejected("invalid_request_error", "Missing required parameter: 'messages'.")
        if body.get("stream"):
            raise Rejected("invalid_request_error", "stream: the simulator answers whole completions only")
        headers = self._admit(request, openai=True)
        await self._answered()
        prompt = max(1, json_tokens(body["messages"]))
        seed = _seed_of(body)
        limit = body.get("max_completion_tokens") or body.get("max_tokens") or 1024
        completion = output_tokens(seed, int(limit)) if type(limit) is int else 16
        self._bill(prompt, completion, 0, 0, 0)
        created = int(self.ctx.wall_time())
        doc = {"id": new_id("chatcmpl-"), "object": "chat.completion", "created": created, "model": body["model"],
               "choices": [{"index": 0, "message": {"role": "assistant", "content": f"answer:{seed}",
                                                    "refusal": None, "annotations": []},
                            "logprobs": None, "finish_reason": "stop"}],
               "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                         "total_tokens": prompt + completion,
                         "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
                         "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                                                       "accepted_prediction_tokens": 0,
                                                       "rejected_prediction_tokens": 0}},
               "service_tier": "default", "system_fingerprint": None}
        return json_response(doc, headers={"x-request-id": new_id("req_"), **headers})

    def _bill(self, input_tokens: int, output: int, five: int, hour: int, read: int) -> None:
        tokens = self.ctx.stats["tokens"]
        tokens["input"] += input_tokens
        tokens["output"] += output
        tokens["cache_write_5m"] += five
        tokens["cache_write_1h"] += hour
        tokens["cache_read"] += read


def _seed_of(params: dict) -> str:
    """A stable short name of a request (the output length and answer text follow it, as a custom_id's do)."""
    return f"{zlib.crc32(orjson.dumps(params.get('messages'))):08x}"
