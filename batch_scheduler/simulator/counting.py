"""Token counts: one deterministic estimate for billing (`usage`) and for `count_tokens`, and prompt caching.

    text_tokens(s)        CJK characters count 1 token each, everything else 4 characters a token
    json_tokens(value)    text_tokens of the value's JSON text (keys and punctuation count too)
    prompt_tokens(params) the whole prompt: tools + system + messages, the same for every caller
    cache_split(...)      the cached prefix of a prompt with `cache_control`: (5m write, 1h write, read)

A client that counts a request with `POST /v1/messages/count_tokens` gets exactly the sum
`input_tokens + cache_creation_input_tokens + cache_read_input_tokens` the simulator bills for it.

Caching: breakpoints are the blocks (tools, system blocks, message content blocks) carrying
`cache_control`, or the end of the prompt for a top-level `cache_control`. What lies up to the last
breakpoint is the cached prefix; up to the last `ttl: "1h"` breakpoint it is written with the 1-hour
TTL, the rest with 5 minutes. A prefix (same model, same bytes) already written and not yet expired on
the simulator clock is read instead. No minimum cacheable length is applied.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

import orjson

TTL_S = {"5m": 300.0, "1h": 3600.0}
_CJK = re.compile(
    "[\u2e80-\u2fdf\u3000-\u303f\u3040-\u30ff\u3100-\u312f\u3130-\u318f\u3190-\u31ff\u3200-\u9fff"
    "\ua960-\ua97f\uac00-\ud7ff\uf900-\ufaff\ufe30-\ufe4f\uff00-\uffef\U00020000-\U0003134f]")
_CACHE_MARK = b'"cache_control"'


def text_tokens(text: str) -> int:
    """~1 token per CJK character, ~4 characters per token for the rest (rounded up)."""
    if text.isascii():
        return (len(text) + 3) // 4
    cjk = len(_CJK.findall(text))
    return cjk + (len(text) - cjk + 3) // 4


def _encoded_tokens(data: bytes) -> int:
    if data.isascii():
        return (len(data) + 3) // 4
    return text_tokens(data.decode())


def json_tokens(value: Any) -> int:
    return _encoded_tokens(orjson.dumps(value))


def _parts(params: dict) -> list[Any]:
    """The prompt in order: tools, system, messages (what the API tokenises, in its order)."""
    return [params[k] for k in ("tools", "system", "messages") if params.get(k) is not None]


def prompt_tokens(params: dict) -> tuple[int, bool]:
    """(tokens of the whole prompt, whether it carries cache_control anywhere)."""
    total = 0
    marked = "cache_control" in params
    for part in _parts(params):
        data = orjson.dumps(part)
        total += _encoded_tokens(data)
        marked = marked or _CACHE_MARK in data
    return max(1, total), marked


def _segments(params: dict) -> list[tuple[Any, dict | None]]:
    """(block, its cache_control) for every cacheable block, in prompt order."""
    out: list[tuple[Any, dict | None]] = []
    tools = params.get("tools")
    if isinstance(tools, list):
        out += [(t, t.get("cache_control") if isinstance(t, dict) else None) for t in tools]
    system = params.get("system")
    if isinstance(system, str):
        out.append((system, None))
    elif isinstance(system, list):
        out += [(b, b.get("cache_control") if isinstance(b, dict) else None) for b in system]
    for message in params.get("messages") or []:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, list):
            out += [(b, b.get("cache_control") if isinstance(b, dict) else None) for b in content]
        else:
            out.append((message, None))
    return out


def _ttl(cache_control: Any) -> str:
    ttl = cache_control.get("ttl", "5m") if isinstance(cache_control, dict) else "5m"
    return ttl if ttl in TTL_S else "5m"


def cached_prefix(params: dict, total: int) -> tuple[int, int, bytes]:
    """(tokens written with the 5-minute TTL, with the 1-hour TTL, the prefix's bytes) of a prompt."""
    segments = _segments(params)
    sizes = [json_tokens(block) for block, _ in segments]
    last = last_1h = -1
    for i, (_, cc) in enumerate(segments):
        if cc is not None:
            last = i
            if _ttl(cc) == "1h":
                last_1h = i
    top = params.get("cache_control")
    if top is not None and segments:
        last = len(segments) - 1
        if _ttl(top) == "1h":
            last_1h = last
    if last < 0:
        return 0, 0, b""
    cached = min(total, sum(sizes[:last + 1]))
    one_hour = min(cached, sum(sizes[:last_1h + 1])) if last_1h >= 0 else 0
    prefix = orjson.dumps([params.get("model"), [block for block, _ in segments[:last + 1]]])
    return cached - one_hour, one_hour, prefix


class PromptCache:
    """Prefixes written so far, by hash, with the clock time they expire; reads refresh the TTL."""

    def __init__(self) -> None:
        self._expires: dict[bytes, tuple[float, float]] = {}  # key -> (expires at, ttl)

    def split(self, params: dict, total: int, now: float) -> tuple[int, int, int]:
        """(5m write, 1h write, read) tokens for one request at clock time `now`."""
        five, hour, prefix = cached_prefix(params, total)
        if not prefix:
            return 0, 0, 0
        key = hashlib.blake2b(prefix, digest_size=16).digest()
        hit = self._expires.get(key)
        ttl = TTL_S["1h"] if hour else TTL_S["5m"]
        if hit is not None and hit[0] > now:
            self._expires[key] = (now + hit[1], hit[1])
            return 0, 0, five + hour
        self._expires[key] = (now + ttl, ttl)
        return five, hour, 0
