"""What each `anthropic-version` accepts in a Messages request, checked the way the real API does.

The API refuses an unknown version at once (400), but reads each request's `params` only while
processing the batch: a request it would refuse comes back as an `errored` result with
`invalid_request_error`, hours later, while the create itself succeeds. `params_problem` is that check.

    2023-06-01 (and 2023-01-01)  the long-lived version: `temperature` and `top_p` in 0..1, `top_k` >= 0,
                                 max_tokens >= 1, unknown fields tolerated
    2026-10-21                   what anthropic 2.15 sends: `temperature`, `top_p`, `top_k` are gone
                                 (refused like any unknown field), max_tokens >= 0 (0 pre-warms the cache)
"""

from __future__ import annotations

from typing import Any

LEGACY_VERSION = "2023-06-01"
CURRENT_VERSION = "2026-10-21"
VERSIONS = ("2023-01-01", LEGACY_VERSION, CURRENT_VERSION)

# anthropic 2.15: MessageCreateParamsNonStreaming under 2026-10-21.
CURRENT_PARAMS = frozenset({
    "cache_control", "container", "diagnostics", "inference_geo", "max_tokens", "messages", "metadata",
    "model", "output_config", "service_tier", "speed", "stop_sequences", "stream", "system", "thinking",
    "tool_choice", "tools", "user_profile_id", "workspace_id",
})
REMOVED_PARAMS = ("temperature", "top_p", "top_k")
ROLES = ("user", "assistant")


def version_problem(value: str | None, required: bool) -> str | None:
    """The 400 message for an `anthropic-version` header the API refuses; None when it is accepted."""
    if value is None:
        return "anthropic-version: header is required" if required else None
    if value not in VERSIONS:
        return f'anthropic-version: "{value}" is not a valid version'
    return None


def _number_problem(params: dict, name: str, low: float, high: float | None) -> str | None:
    value = params.get(name)
    if value is None:
        return None
    if type(value) not in (int, float):
        return f"{name}: Input should be a valid number"
    if value < low:
        return f"{name}: Input should be greater than or equal to {low:g}"
    if high is not None and value > high:
        return f"{name}: Input should be less than or equal to {high:g}"
    return None


def messages_problem(messages: Any) -> str | None:
    if messages is None:
        return "messages: Field required"
    if not isinstance(messages, list):
        return "messages: Input should be a valid list"
    if not messages:
        return "messages: at least one message is required"
    for i, message in enumerate(messages):
        if type(message) is not dict:
            return f"messages.{i}: Input should be a valid dictionary"
        if message.get("role") not in ROLES:
            return f"messages.{i}.role: Input should be 'user' or 'assistant'"
        content = message.get("content")
        if content is None:
            return f"messages.{i}.content: Field required"
        if not isinstance(content, str | list):
            return f"messages.{i}.content: Input should be a valid string or a list of content blocks"
    return None


def params_problem(params: dict, version: str) -> str | None:
    """What the API would answer about one request's params under `version`; None when it runs."""
    model = params.get("model")
    if model is None:
        return "model: Field required"
    if not isinstance(model, str) or not model:
        return "model: Input should be a valid string"
    current = version == CURRENT_VERSION
    max_tokens = params.get("max_tokens")
    if max_tokens is None:
        return "max_tokens: Field required"
    lowest = 0 if current else 1
    if type(max_tokens) is not int or max_tokens < lowest:
        return f"max_tokens: Input should be greater than or equal to {lowest}"
    problem = messages_problem(params.get("messages"))
    if problem:
        return problem
    if params.get("stream"):
        return "stream: streaming is not supported in the Message Batches API"
    if current:
        for name in params:
            if name not in CURRENT_PARAMS:
                return f"{name}: Extra inputs are not permitted"
        return None
    return (_number_problem(params, "temperature", 0, 1) or _number_problem(params, "top_p", 0, 1)
            or _number_problem(params, "top_k", 0, None))
