"""What a templated request carries beyond its prompt (`--params`, a row's `--params-field`), checked here.

The API checks a request's contents only while processing it, hours after the create; a misspelt or
mistyped field would come back as an `errored` result for every request. So before anything is sent:
- the fields the template and the other options own are refused (`messages`, `model`, `system`,
  `stream`), with the option to use instead;
- a known field of the provider's request (the Messages API for anthropic and inline, chat
  completions for openai; the official SDKs' request types) is checked for its type and range;
- a field of the other API (`stop` in a Messages request, `stop_sequences` in a chat one) names its
  counterpart; a field close to a known name is taken for a typo and names it;
- any other field passes as it is, so a field newer than these tables still reaches the API.
With `anthropic-version` 2026-10-21 or later, `temperature`, `top_p` and `top_k` are refused (that
version removed them; API-NOTES §1).
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import Any

Check = Callable[[Any], str | None]  # what is wrong with a value ("must be ..."), or None

RESERVED = {"messages": "the template writes the messages", "model": "use --model or --model-field",
            "system": "use --system", "stream": "streaming is not allowed in a batch"}
NO_SAMPLING_VERSION = "2026-10-21"  # the anthropic-version that removed temperature, top_p and top_k
_SAMPLING = ("temperature", "top_p", "top_k")


def _number(low: float, high: float) -> Check:
    def check(v: Any) -> str | None:
        if type(v) not in (int, float) or not low <= v <= high:
            return f"must be a number from {low:g} to {high:g}"
        return None
    return check


def _whole(low: int | None = None, high: int | None = None) -> Check:
    text = ("a whole number" if low is None else f"a whole number from {low} to {high}" if high is not None
            else f"a whole number of at least {low}")

    def check(v: Any) -> str | None:
        if type(v) is not int or (low is not None and v < low) or (high is not None and v > high):
            return f"must be {text}"
        return None
    return check


def _object(v: Any) -> str | None:
    return None if isinstance(v, dict) else "must be a JSON object"


def _string(v: Any) -> str | None:
    return None if isinstance(v, str) else "must be a string"


def _boolean(v: Any) -> str | None:
    return None if isinstance(v, bool) else "must be true or false"


def _strings(v: Any) -> str | None:
    if not isinstance(v, list) or not all(isinstance(s, str) for s in v):
        return "must be a list of strings"
    return None


def _objects_with(key: str) -> Check:
    def check(v: Any) -> str | None:
        if not isinstance(v, list):
            return "must be a list of objects"
        for i, item in enumerate(v):
            if not isinstance(item, dict) or not isinstance(item.get(key), str):
                return f"[{i}] must be an object with a string {key!r}"
        return None
    return check


def _typed(*types: str, required: dict[str, tuple[str, ...]] | None = None) -> Check:
    """An object whose `type` is one of `types` (any string if none), with the keys `required[type]`."""
    def check(v: Any) -> str | None:
        if not isinstance(v, dict) or not isinstance(v.get("type"), str):
            return "must be an object with a string 'type'"
        if types and v["type"] not in types:
            return f".type must be one of {', '.join(types)} (got {v['type']!r})"
        for key in (required or {}).get(v["type"], ()):
            if key not in v:
                return f".{key} is required with type {v['type']!r}"
        return None
    return check


def _output_config(v: Any) -> str | None:
    if not isinstance(v, dict):
        return "must be a JSON object"
    fmt = v.get("format")
    if fmt is not None and (not isinstance(fmt, dict) or fmt.get("type") != "json_schema"
                            or not isinstance(fmt.get("schema"), dict)):
        return ".format must be {\"type\": \"json_schema\", \"schema\": {...}}"
    return None


def _stop(v: Any) -> str | None:
    if isinstance(v, str):
        return None
    if not isinstance(v, list) or not all(isinstance(s, str) for s in v) or len(v) > 4:
        return "must be a string or a list of at most 4 strings"
    return None


def _openai_tool_choice(v: Any) -> str | None:
    if v in ("none", "auto", "required") or isinstance(v, dict):
        return None
    return "must be 'none', 'auto', 'required' or an object naming a tool"


def _response_format(v: Any) -> str | None:
    problem = _typed("text", "json_object", "json_schema", required={"json_schema": ("json_schema",)})(v)
    if problem is None and v["type"] == "json_schema" and not (
            isinstance(v["json_schema"], dict) and isinstance(v["json_schema"].get("name"), str)):
        return ".json_schema must be an object with a string 'name' (and its 'schema')"
    return problem


def _metadata_strings(v: Any) -> str | None:
    if not isinstance(v, dict) or not all(isinstance(x, str) for x in v.values()) or len(v) > 16:
        return "must be an object of at most 16 string values"
    return None


_ANY: Check = lambda v: None  # noqa: E731 - a known field this table does not check

MESSAGES: dict[str, Check] = {
    "max_tokens": _whole(1), "temperature": _number(0, 1), "top_p": _number(0, 1), "top_k": _whole(0),
    "stop_sequences": _strings, "metadata": _object, "tools": _objects_with("name"),
    "tool_choice": _typed("auto", "any", "tool", "none", required={"tool": ("name",)}),
    "thinking": _typed(required={"enabled": ("budget_tokens",)}), "output_config": _output_config,
    "output_format": _object, "cache_control": _typed("ephemeral"), "service_tier": _string,
    "container": _ANY, "inference_geo": _string, "mcp_servers": _ANY, "context_management": _ANY, "speed": _ANY,
    "diagnostics": _ANY, "workspace_id": _ANY, "user_profile_id": _ANY,
}
CHAT: dict[str, Check] = {
    "max_tokens": _whole(1), "max_completion_tokens": _whole(1), "temperature": _number(0, 2),
    "top_p": _number(0, 1), "n": _whole(1), "stop": _stop, "tools": _objects_with("type"),
    "tool_choice": _openai_tool_choice, "response_format": _response_format, "metadata": _metadata_strings,
    "seed": _whole(), "presence_penalty": _number(-2, 2), "frequency_penalty": _number(-2, 2),
    "logprobs": _boolean, "top_logprobs": _whole(0, 20), "reasoning_effort": _string, "parallel_tool_calls": _boolean,
    "store": _boolean, "service_tier": _string, "user": _string, "verbosity": _string, "audio": _ANY,
    "function_call": _ANY, "functions": _ANY, "logit_bias": _object, "modalities": _strings, "prediction": _ANY,
    "prompt_cache_key": _string, "prompt_cache_retention": _ANY, "safety_identifier": _string,
    "stream_options": _ANY, "web_search_options": _ANY,
}
# a field of the other API, and what this one calls it
_MESSAGES_NOT = {"stop": "stop_sequences", "response_format": "output_config (its format)",
                 "max_completion_tokens": "max_tokens", "n": None, "seed": None, "presence_penalty": None,
                 "frequency_penalty": None}
_CHAT_NOT = {"stop_sequences": "stop", "output_config": "response_format", "top_k": None, "thinking":
             "reasoning_effort", "cache_control": None}


def check_params(params: dict, *, openai: bool, anthropic_version: str, max_tokens: int | None,
                 where: str = "params") -> str | None:
    """What is wrong with `params` for a request of this provider kind, naming the field; None if nothing."""
    known, other = (CHAT, _CHAT_NOT) if openai else (MESSAGES, _MESSAGES_NOT)
    api = "chat completions" if openai else "the Messages API"
    for name, value in params.items():
        label = f"{where}.{name}"
        if name in RESERVED:
            return f"{label} is not allowed here: {RESERVED[name]}"
        check = known.get(name)
        if check is None:
            if name in other:
                instead = other[name]
                return f"{label} is not a field of {api}" + (f"; it calls it {instead}" if instead else "")
            close = difflib.get_close_matches(name, known, n=1, cutoff=0.8)
            if close:
                return f"{label} is not a field of {api}: did you mean {close[0]}?"
            continue
        problem = check(value)
        if problem:
            return f"{label}{'' if problem.startswith(('.', '[')) else ' '}{problem} (got {_show(value)})"
        if not openai and name in _SAMPLING and anthropic_version >= NO_SAMPLING_VERSION:
            return (f"{label} is not accepted with anthropic-version {anthropic_version} (removed in "
                    f"{NO_SAMPLING_VERSION}); give --anthropic-version 2023-06-01 to send it")
    thinking = params.get("thinking")
    limit = params.get("max_tokens", max_tokens)
    if not openai and isinstance(thinking, dict) and thinking.get("type") == "enabled":
        budget = thinking.get("budget_tokens")
        if type(budget) is not int or budget < 1024:
            return f"{where}.thinking.budget_tokens must be a whole number of at least 1024 (got {_show(budget)})"
        if isinstance(limit, int) and budget >= limit:
            return f"{where}.thinking.budget_tokens ({budget}) must be less than max_tokens ({limit})"
    return None


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
