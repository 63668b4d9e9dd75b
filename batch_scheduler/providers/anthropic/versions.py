"""What each `anthropic-version` accepts in a Messages request, checked before anything is sent.

The API reads a batch request's `params` only while processing it: a request its version refuses
comes back hours later as an `errored` result (`invalid_request_error`). These checks turn that into
a line of rejected.jsonl (file, line, reason) before anything is paid.

    2023-06-01 (and 2023-01-01)  the long-lived version, deprecated: `temperature` and `top_p` in 0..1,
                                 `top_k` >= 0, `max_tokens` >= 1; other fields are left to the API
    2026-10-21                   what the official SDK sends (anthropic 2.15, `_constants.ANTHROPIC_API_VERSION`):
                                 `temperature`, `top_p` and `top_k` are gone; a field outside the SDK's
                                 `MessageCreateParams` is refused; `max_tokens` >= 0

A version this module does not know is passed through with the checks every version shares (the API
refuses an unknown version at the first call, before anything is paid).
"""

from __future__ import annotations

from collections.abc import Callable

LEGACY_VERSION = "2023-06-01"
CURRENT_VERSION = "2026-10-21"
KNOWN_VERSIONS = ("2023-01-01", LEGACY_VERSION, CURRENT_VERSION)
REMOVED_PARAMS = ("temperature", "top_p", "top_k")  # by 2026-10-21

# anthropic 2.15, types/message_create_params.py: MessageCreateParamsBase (`stream` is checked apart)
CURRENT_PARAMS = frozenset({
    "cache_control", "container", "diagnostics", "inference_geo", "max_tokens", "messages", "metadata",
    "model", "output_config", "service_tier", "speed", "stop_sequences", "stream", "system", "thinking",
    "tool_choice", "tools", "user_profile_id", "workspace_id",
})
_LEGACY_RANGES = frozenset(REMOVED_PARAMS)

ParamsCheck = Callable[[dict], str | None]  # params -> the reason the version refuses them, or None


def _number(params: dict, name: str, low: float, high: float | None) -> str | None:
    value = params.get(name)
    if value is None:
        return None
    if type(value) not in (int, float):
        return f"params.{name} must be a number"
    if value < low or (high is not None and value > high):
        return f"params.{name} {value!r} is out of range ({low:g} to {high:g})" if high is not None else \
            f"params.{name} {value!r} must be at least {low:g}"
    return None


def _max_tokens(params: dict, lowest: int) -> str | None:
    value = params.get("max_tokens")
    if type(value) is not int or value < lowest:
        return f"params.max_tokens must be a whole number of at least {lowest} (got {value!r})"
    return None


def _legacy(params: dict) -> str | None:
    if type(params.get("max_tokens")) is int and params["max_tokens"] >= 1 and not (_LEGACY_RANGES & params.keys()):
        return None  # the common case: nothing to range-check
    return (_max_tokens(params, 1) or _number(params, "temperature", 0, 1) or _number(params, "top_p", 0, 1)
            or _number(params, "top_k", 0, None))


def _current(params: dict) -> str | None:
    if params.keys() <= CURRENT_PARAMS and type(params.get("max_tokens")) is int and params["max_tokens"] >= 0:
        return None  # the common case
    for name in REMOVED_PARAMS:
        if name in params:
            return (f"params.{name} is not accepted under anthropic-version {CURRENT_VERSION}, which removed "
                    f"{', '.join(REMOVED_PARAMS[:-1])} and {REMOVED_PARAMS[-1]}; remove it, or run the job with "
                    f"--anthropic-version {LEGACY_VERSION}")
    unknown = sorted(set(params) - CURRENT_PARAMS)
    if unknown:
        return f"params.{unknown[0]} is not a Messages parameter under anthropic-version {CURRENT_VERSION}"
    return _max_tokens(params, 0)


def _unknown(params: dict) -> str | None:
    return None


def params_check(version: str) -> ParamsCheck:
    """The check of one request's params under `version`."""
    if version == CURRENT_VERSION:
        return _current
    if version in KNOWN_VERSIONS:
        return _legacy
    return _unknown
