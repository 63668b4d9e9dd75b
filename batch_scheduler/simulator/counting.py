"""Token counts: one deterministic estimate for billing (`usage`) and for `count_tokens`, and prompt caching.

    text_tokens(s)        CJK characters count 1 token each, everything else 4 characters a token
                          ("CJK" is every character of 3 or 4 bytes in UTF-8, U+0800 up: CJK, kana,
                          Hangul, and likewise most non-Latin scripts and emoji; counted on the bytes)
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

With `cache_as_measured` (SimConfig) the cache behaves as users measured it (Bike4Mind#2741,
anthropics/skills#1475): a write becomes readable only once the request that wrote it has completed
(`ready_at`: a batch's end, a realtime call's answer), so the requests of one batch never read each
other's writes; it stays readable for its TTL from then (reads refresh it); and the prefix is its content,
the `cache_control` marks left out (a 1-hour and a 5-minute mark on the same text are one prefix).
"""

from __future__ import annotations

import hashlib
import math
from typing import Any

import orjson

TTL_S = {"5m": 300.0, "1h": 3600.0}
# bytes.translate deletes all but: the lead bytes of 3- and 4-byte characters / UTF-8 continuation bytes
_ALL_BUT_WIDE_LEADS = bytes(b for b in range(256) if not 0xE0 <= b <= 0xF7)
_ALL_BUT_CONTINUATIONS = bytes(b for b in range(256) if not 0x80 <= b <= 0xBF)


def encoded_tokens(data: bytes) -> int:
    """Tokens of UTF-8 text: a token per wide (3- or 4-byte) character, 4 other characters a token."""
    if data.isascii():
        return (len(data) + 3) // 4
    wide = len(data.translate(None, _ALL_BUT_WIDE_LEADS))
    chars = len(data) - len(data.translate(None, _ALL_BUT_CONTINUATIONS))
    return wide + (chars - wide + 3) // 4


def text_tokens(text: str) -> int:
    """~1 token per CJK character, ~4 characters per token for the rest (rounded up)."""
    return encoded_tokens(text.encode())


def json_tokens(value: Any) -> int:
    return encoded_tokens(orjson.dumps(value))


_PROMPT_KEYS = ("tools", "system", "messages")  # the prompt in the order the API tokenises it


def prompt_tokens(params: dict) -> tuple[int, bool]:
    """(tokens of the whole prompt, whether it carries a cache_control `cached_prefix` reads): each part of
    `_PROMPT_KEYS` present, as its JSON text."""
    total = sum(encoded_tokens(orjson.dumps(params[key])) for key in _PROMPT_KEYS if params.get(key) is not None)
    return max(1, total), _marked(params)


def _marked(params: dict) -> bool:
    """Whether the prompt, or a block `cached_prefix` reads, carries a cache_control: the blocks' keys, not a
    search through the prompt's text (params already checked: messages is a list)."""
    return "cache_control" in params or any(cc is not None for _, cc in _segments(params))


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


def _bare(block: Any) -> Any:
    return {k: v for k, v in block.items() if k != "cache_control"} if isinstance(block, dict) else block


def cached_prefix(params: dict, total: int, bare: bool = False) -> tuple[int, int, bytes]:
    """(tokens written with the 5-minute TTL, with the 1-hour TTL, the prefix's bytes) of a prompt; `bare`:
    the prefix's bytes without the cache_control marks."""
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
    prefix = orjson.dumps([params.get("model"), [_bare(b) if bare else b for b, _ in segments[:last + 1]]])
    return cached - one_hour, one_hour, prefix


class PromptCache:
    """Prefixes written so far, by hash: when each becomes readable, when it expires, its TTL; reads refresh
    the TTL. A write with `ready_at` (cache_as_measured) is readable from then; math.inf: once `settle` says
    when (a batch's end, drawn after its requests are read)."""

    def __init__(self) -> None:
        self._entries: dict[bytes, tuple[float, float, float]] = {}  # key -> (readable from, expires at, ttl)

    def split(self, params: dict, total: int, now: float, ready_at: float | None = None,
              written: list[bytes] | None = None) -> tuple[int, int, int]:
        """(5m write, 1h write, read) tokens for one request at clock time `now`; the keys it writes pending
        a `settle` go to `written`."""
        five, hour, prefix = cached_prefix(params, total, bare=ready_at is not None)
        if not prefix:
            return 0, 0, 0
        key = hashlib.blake2b(prefix, digest_size=16).digest()
        hit = self._entries.get(key)
        ttl = TTL_S["1h"] if hour else TTL_S["5m"]
        if hit is not None and hit[0] <= now < hit[1]:
            self._entries[key] = (hit[0], max(hit[1], now + hit[2]), hit[2])
            return 0, 0, five + hour
        ready = now if ready_at is None else ready_at
        if hit is not None and hit[1] > now:  # written, not readable yet: this one writes too
            ready, ttl = min(ready, hit[0]), max(ttl, hit[2])
        self._entries[key] = (ready, ready + ttl, ttl)
        if written is not None and ready == math.inf:
            written.append(key)
        return five, hour, 0

    def settle(self, written: list[bytes], ready_at: float) -> None:
        """The writes pending their batch's end become readable at `ready_at` (for their TTL from then)."""
        for key in written:
            entry = self._entries.get(key)
            if entry is not None and entry[0] > ready_at:
                self._entries[key] = (ready_at, ready_at + entry[2], entry[2])
