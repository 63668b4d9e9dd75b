"""Prices per model and what a job costs: tokens x price x batch discount, per token kind.

The table ships in `scheduler/data/prices.json` (standard prices per million tokens and the batch
discount); a user file given with --prices (same shape) overrides models one by one. A model the
table does not know costs None ("unknown"), never a guess.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import resources
from typing import Any

import orjson

from batch_scheduler.core.errors import UsageError


@dataclass(frozen=True)
class Price:
    input: float
    output: float
    cache_write: float
    cache_read: float


class PriceTable:
    def __init__(self, models: dict[str, Price], batch_discount: float):
        self.models = models
        self.batch_discount = batch_discount
        self._cache: dict[str | None, Price | None] = {}
        self.unknown: set[str] = set()

    @classmethod
    def load(cls, user_file: str | None = None) -> PriceTable:
        doc = json.loads(resources.files("batch_scheduler").joinpath("data/prices.json").read_text("utf-8"))
        models = {k: Price(**v) for k, v in doc["models"].items()}
        discount = float(doc.get("batch_discount", 0.5))
        if user_file:
            try:
                with open(user_file, encoding="utf-8") as f:
                    user = json.load(f)
                if not isinstance(user, dict) or not isinstance(user.get("models", {}), dict):
                    raise ValueError('expected {"models": {"MODEL": {"input": ..., "output": ..., '
                                     '"cache_write": ..., "cache_read": ...}}, "batch_discount": 0.5}')
                models.update({k: Price(**v) for k, v in user.get("models", {}).items()})
                discount = float(user.get("batch_discount", discount))
            except (OSError, ValueError, TypeError) as exc:
                raise UsageError(f"--prices {user_file}: {exc}") from None
        return cls(models, discount)

    def price(self, model: str | None) -> Price | None:
        if model in self._cache:
            return self._cache[model]
        found = None
        if model:
            best = max((k for k in self.models if model == k or model.startswith(k + "-")),
                       key=len, default=None)
            found = self.models.get(best) if best else None
            if found is None:
                self.unknown.add(model)
        self._cache[model] = found
        return found

    def cost(self, model: str | None, usage) -> float:
        """USD for one answer's usage at batch prices; 0.0 for an unknown model (listed in .unknown)."""
        p = self.price(model)
        if p is None or usage is None:
            return 0.0
        return (usage.input_tokens * p.input + usage.output_tokens * p.output
                + usage.cache_write_tokens * p.cache_write
                + usage.cache_read_tokens * p.cache_read) * self.batch_discount / 1e6


# -- estimates before anything is sent (dry run, --max-cost) ------------------------------------
#
# One estimator for both: the dry run prints its per-model totals as a range, and --max-cost holds the
# top of that range for each batch in flight against the cap, so the two never disagree. --max-cost runs
# it over every batch's lines on the event loop, so the common shapes (a string, a text block, a
# {role, content} message) are read where they are met instead of through another call, to the same result.

CHARS_PER_TOKEN = 3.5
_TEXT_FIELDS = ("system", "messages", "input", "prompt")


def _chars(content: Any) -> int:
    """Characters of text in a message content, a system prompt or an input: strings and text blocks
    count their text; any other block (image, tool use or result, ...) counts its JSON, which overstates
    images (their base64) but keeps the estimate from ignoring them."""
    kind = type(content)
    if kind is str:
        return len(content)
    if kind is list or (kind is not dict and isinstance(content, list)):
        n = 0
        for item in content:
            if type(item) is str:
                n += len(item)
            else:
                text = item.get("text") if type(item) is dict else None  # a text block: its text, directly
                n += len(text) if type(text) is str else _chars(item)
        return n
    if isinstance(content, dict):
        text = content.get("text")
        if isinstance(text, str):
            return len(text)
        if "content" in content and "role" in content:  # an OpenAI or Anthropic message
            return _chars(content["content"])
    elif content is None:
        return 0
    elif isinstance(content, str):
        return len(content)
    return len(json.dumps(content, ensure_ascii=False))


def estimate_input_tokens(params: dict) -> int:
    """Input tokens of one request, estimated without a tokenizer.

    The heuristic: characters of text in `system`, every message's content, the OpenAI `input` /
    `prompt` fields and the tools' JSON, divided by 3.5 and rounded up. English prose runs about 4
    characters a token, code and other languages fewer, so 3.5 leans high; the true count comes back
    in each result's usage.
    """
    chars = 0
    for name in _TEXT_FIELDS:
        value = params.get(name)
        if value is None:
            continue
        if type(value) is str:
            chars += len(value)
        elif name == "messages" and type(value) is list:
            for msg in value:  # _chars of each message; a {role, content} one's content taken directly
                is_message = type(msg) is dict and "role" in msg and "content" in msg and "text" not in msg
                content = msg["content"] if is_message else msg
                chars += len(content) if type(content) is str else _chars(content)
        else:
            chars += _chars(value)
    if params.get("tools"):
        chars += len(json.dumps(params["tools"], ensure_ascii=False))
    return math.ceil(chars / CHARS_PER_TOKEN)


def estimate_request(obj: dict, provider_name: str | None = None) -> tuple[str | None, int, int]:
    """(model, estimated input tokens, most output tokens) of one request line, parsed.

    Understands the Message Batches form (`params`) and the `{method, url, body}` form of OpenAI and
    the inline proxy (`provider_name` says which to read first when a line has both; a line a provider
    accepted has only its own); the output bound is `max_tokens`, else `max_completion_tokens` /
    `max_output_tokens` (0 when the request sets none, e.g. embeddings).
    """
    first, second = ("body", "params") if provider_name in ("openai", "inline") else ("params", "body")
    params = obj.get(first)
    if not isinstance(params, dict):
        params = obj.get(second)
        if not isinstance(params, dict):
            params = {}
    out = params.get("max_tokens") or params.get("max_completion_tokens") or params.get("max_output_tokens") or 0
    model = params.get("model")
    return (model if isinstance(model, str) else None), estimate_input_tokens(params), int(out)


@dataclass(slots=True)
class ModelTotals:
    requests: int = 0
    input_tokens: int = 0
    max_output_tokens: int = 0


def tally(lines: Iterable[bytes], provider_name: str | None = None,
          into: dict[str | None, ModelTotals] | None = None) -> dict[str | None, ModelTotals]:
    """Per model (None: the request names none), the request lines' counts and token estimates."""
    sums: dict[str | None, list[int]] = {}  # model -> [requests, input tokens, max output tokens]
    for obj in map(orjson.loads, lines):
        model, input_tokens, max_out = estimate_request(obj, provider_name)
        row = sums.get(model)
        if row is None:
            sums[model] = row = [0, 0, 0]
        row[0] += 1
        row[1] += input_tokens
        row[2] += max_out
    by_model: dict[str | None, ModelTotals] = {} if into is None else into
    for model, (requests, input_tokens, max_out) in sums.items():
        totals = by_model.setdefault(model, ModelTotals())
        totals.requests += requests
        totals.input_tokens += input_tokens
        totals.max_output_tokens += max_out
    return by_model


def cost_range(prices: PriceTable, model: str | None, totals: ModelTotals) -> tuple[float, float] | None:
    """(low, high) USD at batch prices: estimated input only, then plus every request's most output.
    None when the model has no price: never guessed (the dry run says "unknown price")."""
    p = prices.price(model)
    if p is None:
        return None
    low = totals.input_tokens * p.input * prices.batch_discount / 1e6
    return low, low + totals.max_output_tokens * p.output * prices.batch_discount / 1e6
