"""Cached prompt prefixes: which requests share one, the lane that keeps them in the same batches, and the
1-hour mark a priming request carries.

A request's cached prefix is what lies up to its last block carrying `cache_control` (tools, then system
blocks, then message content blocks: the order the API reads the prompt), with the model; the
`cache_control` values themselves are not part of it (a 5-minute and a 1-hour mark on the same text
are the same prefix). A top-level `cache_control` caches each whole prompt: nothing is shared, so no
prefix is named for it.

With priming on (`--prime-via realtime|batch`, the default realtime; see job.send.prime), the cut keeps
requests of one prefix together (`job_lane_of`: the provider's lane, then the prefix), so a batch's
requests read the cache its priming request wrote. The same lane function is the validator's, the
replay's and the retry batches' (one place, so a resumed run cuts the same chunks). A request without a
mark is told apart first, without building its list of blocks (`_marked`), so a job without marks pays
little for priming being on.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import orjson

from batch_scheduler.providers.base import Provider

PRIME_VIA = ("realtime", "batch", "off")
_MARK = "cache_control"


def _blocks(params: dict) -> list[Any]:
    """Every cacheable block in prompt order: tools, system blocks, message content blocks (or messages)."""
    out: list[Any] = []
    tools = params.get("tools")
    if isinstance(tools, list):
        out += tools
    system = params.get("system")
    if isinstance(system, list):
        out += system
    elif system is not None:
        out.append(system)
    messages = params.get("messages")
    for message in messages if isinstance(messages, list) else ():
        content = message.get("content") if isinstance(message, dict) else None
        out += content if isinstance(content, list) else [message]
    return out


def _marked(params: dict) -> bool:
    """Whether a block of `_blocks(params)` carries the mark, without building the list (most carry none)."""
    tools, system, messages = params.get("tools"), params.get("system"), params.get("messages")
    if isinstance(tools, list) and _any_marked(tools):
        return True
    if _any_marked(system) if isinstance(system, list) else isinstance(system, dict) and _MARK in system:
        return True
    for message in messages if isinstance(messages, list) else ():
        if isinstance(message, dict):
            content = message.get("content")
            if _any_marked(content) if isinstance(content, list) else _MARK in message:
                return True
    return False


def _plainly_unmarked(params: dict) -> bool:
    """True for the most common request without a mark (no tools, the system prompt a string, each message's
    content a string, no mark on a message): decided in a few looks. False: ask `_marked`."""
    messages = params.get("messages")
    if "tools" in params or type(params.get("system", "")) is not str or type(messages) is not list:
        return False
    for message in messages:
        if type(message) is not dict or type(message.get("content")) is not str or _MARK in message:
            return False
    return True


def _any_marked(blocks: list) -> bool:
    return any(isinstance(b, dict) and _MARK in b for b in blocks)


def prefix_key(params: Any) -> str | None:
    """A short name of the request's cached prefix, or None when it marks no block for caching."""
    if not isinstance(params, dict) or not _marked(params):
        return None
    blocks = _blocks(params)
    last = max((i for i, b in enumerate(blocks) if isinstance(b, dict) and _MARK in b), default=-1)
    if last < 0:
        return None
    bare = [{k: v for k, v in b.items() if k != _MARK} if isinstance(b, dict) else b for b in blocks[:last + 1]]
    return hashlib.blake2b(orjson.dumps([params.get("model"), bare]), digest_size=8).hexdigest()


def priming_via(provider: Provider) -> str | None:
    """How this job primes ("realtime" or "batch"), or None when it does not: --prime-via off, or a provider
    with neither a realtime endpoint nor one-request batches (a batch floor above 1)."""
    via = provider.settings.prime_via
    if via not in ("realtime", "batch"):
        return None
    one_request_batches = provider.spec.min_batch_requests <= 1
    if via == "realtime" and provider.realtime_api is None:
        via = "batch"
    return via if via == "realtime" or one_request_batches else None


def job_lane_of(provider: Provider) -> Callable[[dict], str] | None:
    """The lane of a line as the job cuts it: the provider's (None: one lane), then its cached prefix when
    the job primes."""
    base: Callable[[dict], str] | None = provider.lane_of
    if priming_via(provider) is None:
        return base
    field = provider.body_field

    def lane_of(obj: dict) -> str:
        own = base(obj) if base is not None else ""
        key = prefix_key(obj.get(field) or obj.get("params"))
        return own if key is None else f"{own}|{key}"

    def prefix_lane_of(obj: dict) -> str:  # the same without the provider's lanes (the common case, kept lean)
        params = obj.get(field) or obj.get("params")
        if type(params) is dict and _plainly_unmarked(params):
            return ""
        key = prefix_key(params)
        return "" if key is None else f"|{key}"

    return lane_of if base is not None else prefix_lane_of


def line_prefix(line: bytes, field: str) -> str | None:
    """The cached prefix of a request line (None: none, or not a request object)."""
    if _MARK.encode() not in line:
        return None
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    return prefix_key(obj.get(field) or obj.get("params")) if isinstance(obj, dict) else None


def mark_one_hour(line: bytes) -> bytes:
    """The request line with every `cache_control` it carries set to the 1-hour lifetime."""
    if _MARK.encode() not in line:
        return line
    obj = orjson.loads(line)

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                if k == _MARK and isinstance(v, dict):
                    v["ttl"] = "1h"
                else:
                    walk(v)
        elif isinstance(value, list):
            for v in value:
                walk(v)

    walk(obj)
    return orjson.dumps(obj)
