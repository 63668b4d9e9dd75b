"""A batch's requests as parallel lists, read from a create body, and the Batch made from them.

What a create checks at once (the batch's own schema: the list, each custom_id, that params is an
object) raises Rejected naming `requests.N`; what lies inside params is checked as the real API does,
while processing: a problem becomes that request's `errored` result (validation.py), unless
`params_at_create` asks for the eager check some proxies do.
"""

from __future__ import annotations

import math
import re
from typing import Any

from aiohttp import web

from batch_scheduler.simulator.context import SimContext
from batch_scheduler.simulator.counting import PromptCache, prompt_tokens
from batch_scheduler.simulator.responses import Rejected
from batch_scheduler.simulator.store import (
    Batch,
    draw_duration,
    draw_missing,
    draw_outcomes,
    new_id,
    output_tokens,
)
from batch_scheduler.simulator.validation import LEGACY_VERSION, params_problem

CUSTOM_ID = re.compile(r"[a-zA-Z0-9_-]{1,64}")


class Requests:
    """Parallel lists for the requests of one batch; cache tokens and problems are sparse."""

    __slots__ = ("custom_ids", "models", "max_tokens", "in_tokens", "invalid", "cache", "written")

    def __init__(self) -> None:
        self.custom_ids: list[str] = []
        self.models: list[str] = []
        self.max_tokens: list[int] = []
        self.in_tokens: list[int] = []
        self.invalid: dict[int, str] = {}
        self.cache: dict[int, tuple[int, int, int]] = {}
        self.written: list[bytes] = []  # prompt-cache writes readable once the batch ends (cache_as_measured)

    def add_invalid(self, problem: str, model: str = "") -> None:
        self.invalid[len(self.custom_ids) - 1] = problem
        self.models.append(model)
        self.max_tokens.append(0)
        self.in_tokens.append(0)


def _custom_id(i: int, item: Any, seen: set[str]) -> str:
    if type(item) is not dict:
        raise Rejected("invalid_request_error", f"requests.{i}: Input should be a valid dictionary")
    cid = item.get("custom_id")
    if cid is None:
        raise Rejected("invalid_request_error", f"requests.{i}.custom_id: Field required")
    if type(cid) is not str or not CUSTOM_ID.fullmatch(cid):
        raise Rejected("invalid_request_error",
                       f"requests.{i}.custom_id: String should match pattern '^[a-zA-Z0-9_-]{{1,64}}$'")
    if cid in seen:
        raise Rejected("invalid_request_error", f"requests.{i}.custom_id: duplicate custom_id '{cid}'")
    seen.add(cid)
    return cid


def parse_requests(items: list, key: str, check: Any = None, *, version: str = LEGACY_VERSION,
                   at_create: bool = False, cache: PromptCache | None = None, now: float = 0.0,
                   as_measured: bool = False) -> Requests:
    """Read `[{"custom_id", key: {...}}]` as the API does at create; raise Rejected naming requests.N.
    `as_measured`: the cache writes of these requests become readable when their batch ends (`new_batch`)."""
    out = Requests()
    seen: set[str] = set()
    models: dict[str, str] = {}
    for i, item in enumerate(items):
        cid = _custom_id(i, item, seen)
        params = item.get(key)
        if params is None:
            raise Rejected("invalid_request_error", f"requests.{i}.{key}: Field required")
        if type(params) is not dict:
            raise Rejected("invalid_request_error", f"requests.{i}.{key}: Input should be a valid dictionary")
        if check is not None:
            check(i, item, params)
        problem = params_problem(params, version)
        if problem and at_create:
            raise Rejected("invalid_request_error", f"requests.{i}.{key}.{problem}")
        out.custom_ids.append(cid)
        if problem:
            out.add_invalid(problem)
            continue
        model = params["model"]
        out.models.append(models.setdefault(model, model))
        out.max_tokens.append(params["max_tokens"])
        total, marked = prompt_tokens(params)
        if marked and cache is not None:
            split = cache.split(params, total, now, math.inf if as_measured else None, out.written)
            if any(split):
                out.cache[i] = split
                total -= sum(split)
        out.in_tokens.append(total)
    return out


def limit_arg(request: web.Request, maximum: int) -> int:
    raw = request.query.get("limit", "20")
    try:
        limit = int(raw)
    except ValueError:
        limit = 0
    if not 1 <= limit <= maximum:
        raise Rejected("invalid_request_error", f"limit: must be an integer from 1 to {maximum}")
    return limit


TIMEOUT_KINDS = ("openai", "azure", "groq", "together")  # OpenAI-style file APIs: `request_timeout` error lines


def new_batch(ctx: SimContext, kind: str, prefix: str, reqs: Requests, now: float, **extra: Any) -> Batch:
    """A Batch with its outcomes, missing requests and duration drawn (seeded) now."""
    config = ctx.config
    n = len(reqs.custom_ids)
    batch_id = new_id(prefix)
    outcomes = draw_outcomes(ctx.rng, n, reqs.invalid, config, timeouts=kind in TIMEOUT_KINDS)
    missing = draw_missing(ctx.rng, n, config.missing_rate)
    ends_at = now + draw_duration(ctx.rng, config, n)
    if reqs.written:
        ctx.prompt_cache.settle(reqs.written, ends_at)
    return Batch(
        id=batch_id, kind=kind, created_wall=ctx.wall_time(), created_at=now,
        ends_at=ends_at,
        custom_ids=reqs.custom_ids, models=reqs.models, max_tokens=reqs.max_tokens, in_tokens=reqs.in_tokens,
        out_tokens=list(map(output_tokens, reqs.custom_ids, reqs.max_tokens)),
        outcomes=outcomes, invalid=reqs.invalid, missing=missing, cache=reqs.cache,
        extra={"token": batch_id[-12:], **extra},
    )
