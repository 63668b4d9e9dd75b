"""Prices per model and what a job costs: tokens x price x batch discount, per token kind.

The table ships in `scheduler/data/prices.json` (standard prices per million tokens and the batch
discount); a user file given with --prices (same shape) overrides models one by one. A model the
table does not know costs None ("unknown"), never a guess.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from importlib import resources

from .errors import UsageError


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
        doc = json.loads(resources.files("scheduler").joinpath("data/prices.json").read_text("utf-8"))
        models = {k: Price(**v) for k, v in doc["models"].items()}
        discount = float(doc.get("batch_discount", 0.5))
        if user_file:
            try:
                with open(user_file, encoding="utf-8") as f:
                    user = json.load(f)
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


# -- estimates before anything is sent (dry run) ------------------------------------------------

CHARS_PER_TOKEN = 3.5


def _chars(content: object) -> int:
    """Characters of text in a message content, a system prompt or an input: strings and text blocks
    count their text; any other block (image, tool use or result, ...) counts its JSON, which overstates
    images (their base64) but keeps the estimate from ignoring them."""
    if content is None:
        return 0
    if isinstance(content, str):
        return len(content)
    if isinstance(content, list):
        return sum(_chars(item) for item in content)
    if isinstance(content, dict):
        if isinstance(content.get("text"), str):
            return len(content["text"])
        if "content" in content and "role" in content:  # an OpenAI or Anthropic message
            return _chars(content["content"])
    return len(json.dumps(content, ensure_ascii=False))


def estimate_input_tokens(params: dict) -> int:
    """Input tokens of one request, estimated without a tokenizer.

    The heuristic: characters of text in `system`, every message's content, the OpenAI `input` /
    `prompt` fields and the tools' JSON, divided by 3.5 and rounded up. English prose runs about 4
    characters a token, code and other languages fewer, so 3.5 leans high; the true count comes back
    in each result's usage.
    """
    chars = _chars(params.get("system")) + _chars(params.get("messages"))
    chars += _chars(params.get("input")) + _chars(params.get("prompt"))
    if params.get("tools"):
        chars += len(json.dumps(params["tools"], ensure_ascii=False))
    return math.ceil(chars / CHARS_PER_TOKEN)


def estimate_request(obj: dict, provider_name: str) -> tuple[str | None, int, int]:
    """(model, estimated input tokens, most output tokens) of one request line, parsed.

    Understands the Message Batches form (`params`) and the `{method, url, body}` form of OpenAI and
    the inline proxy; the output bound is `max_tokens`, else `max_completion_tokens` /
    `max_output_tokens` (0 when the request sets none, e.g. embeddings).
    """
    first, second = ("body", "params") if provider_name in ("openai", "inline") else ("params", "body")
    params = obj.get(first)
    if not isinstance(params, dict):
        params = obj.get(second) if isinstance(obj.get(second), dict) else {}
    out = params.get("max_tokens") or params.get("max_completion_tokens") or params.get("max_output_tokens") or 0
    model = params.get("model")
    return (model if isinstance(model, str) else None), estimate_input_tokens(params), int(out)
