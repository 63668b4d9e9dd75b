"""Prices per model and what a job costs: tokens x price x batch discount, per token kind.

The table ships in `batch_scheduler/data/prices.json` (standard prices per million tokens, the date
they were taken, and the batch discount); a user file given with --prices (same shape) overrides
models one by one. Per model: input, output, cache_write (5-minute TTL, 1.25x input), cache_write_1h
(1-hour TTL, 2x input), cache_read (0.1x on most models); optionally `long_context` (every token of a
request whose prompt is above `above_input_tokens` costs those prices) and `batch` (a batch price that
is not the discount times the standard one). A model id matches a key exactly, or as the key plus a
snapshot date or `-latest`; a model the table does not know costs None ("unknown"), never a guess,
and a job under --max-cost with such a model is refused before anything is sent (see budget).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from importlib import resources
from operator import add
from typing import Any

from batch_scheduler.core.errors import UsageError
from batch_scheduler.job.money.estimate import (  # noqa: F401 - the estimator's names, where they were before
    CHARS_PER_TOKEN,
    ModelTotals,
    estimate_input_tokens,
    estimate_request,
    tally,
)
from batch_scheduler.providers.base import Usage

KINDS = ("input", "output", "cache_write", "cache_write_1h", "cache_read")
_SNAPSHOT = re.compile(r"(-\d{8}|-\d{4}-\d{2}-\d{2}|@\d{8}|-latest)$")


@dataclass(frozen=True)
class Tier:
    above_input_tokens: int
    input: float
    output: float
    cache_write: float
    cache_write_1h: float
    cache_read: float


@dataclass(frozen=True)
class Price:
    input: float
    output: float
    cache_write: float
    cache_read: float
    cache_write_1h: float | None = None  # None: 2x input, the providers' rule for the 1-hour TTL
    long_context: Tier | None = None
    batch: dict[str, float] = field(default_factory=dict)  # kind -> batch price, where not discount x standard

    def rate(self, kind: str, discount: float, long: bool = False) -> float:
        """USD per million tokens of `kind` in a batch."""
        if long and self.long_context is not None:
            return getattr(self.long_context, kind) * discount
        if kind in self.batch:
            return self.batch[kind]
        if kind == "cache_write_1h" and self.cache_write_1h is None:
            return 2 * self.input * discount
        return getattr(self, kind) * discount


def price_of(doc: dict, where: str) -> Price:
    """One model's entry of a price table; UsageError naming `where` when it is not one."""
    try:
        tier = doc.get("long_context")
        if tier is not None:
            tier = Tier(**{"cache_write": tier["input"] * 1.25, "cache_write_1h": tier["input"] * 2,
                           "cache_read": tier["input"], **tier})
        batch = {str(k): float(v) for k, v in (doc.get("batch") or {}).items()}
        unknown = set(batch) - set(KINDS)
        if unknown:
            raise ValueError(f"batch: unknown kind(s) {', '.join(sorted(unknown))}")
        values = {k: float(doc[k]) for k in ("input", "output", "cache_write", "cache_read")}
        one_hour = doc.get("cache_write_1h")
        price = Price(**values, cache_write_1h=None if one_hour is None else float(one_hour), long_context=tier,
                      batch=batch)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise UsageError(f"{where}: not a price ({type(exc).__name__}: {exc})") from None
    check_price(price, where)
    return price


def check_price(p: Price, where: str) -> None:
    """Every figure a number >= 0: a negative price makes answers earn money, and slips past --max-cost."""
    figures = [(k, getattr(p, k)) for k in KINDS if getattr(p, k) is not None]
    figures += [(f"batch.{k}", v) for k, v in p.batch.items()]
    if p.long_context is not None:
        figures += [(f"long_context.{k}", getattr(p.long_context, k)) for k in KINDS]
    for name, value in figures:
        if type(value) not in (int, float) or not math.isfinite(value) or value < 0:
            raise UsageError(f"{where}: {name} is {value!r}: a price is a number >= 0 (USD per million tokens)")


class PriceTable:
    def __init__(self, models: dict[str, Price], batch_discount: float, taken: str | None = None):
        self.models = models
        self.batch_discount = batch_discount
        self.taken = taken
        self._cache: dict[str | None, Price | None] = {}
        self.unknown: set[str] = set()

    @classmethod
    def load(cls, user_file: str | None = None) -> PriceTable:
        doc = json.loads(resources.files("batch_scheduler").joinpath("data/prices.json").read_text("utf-8"))
        models = {k: price_of(v, f"prices.json: {k}") for k, v in doc["models"].items()}
        discount = float(doc.get("batch_discount", 0.5))
        taken = doc.get("taken")
        if user_file:
            try:
                with open(user_file, encoding="utf-8") as f:
                    user = json.load(f)
                if not isinstance(user, dict) or not isinstance(user.get("models", {}), dict):
                    raise ValueError('expected {"models": {"MODEL": {"input": ..., "output": ..., '
                                     '"cache_write": ..., "cache_read": ...}}, "batch_discount": 0.5}')
                models.update({k: price_of(v, f"--prices {user_file}: {k}") for k, v in user.get("models", {}).items()})
                discount = float(user.get("batch_discount", discount))
                if not math.isfinite(discount) or discount < 0:
                    raise UsageError(f"--prices {user_file}: batch_discount is {discount!r}: expected a number >= 0")
                taken = user.get("taken", taken)
            except (OSError, ValueError, TypeError, AttributeError) as exc:
                raise UsageError(f"--prices {user_file}: {exc}") from None
        return cls(models, discount, taken)

    def realtime(self) -> PriceTable:
        """The same table at realtime prices: the standard ones, no batch discount or batch entries."""
        return PriceTable({k: replace(p, batch={}) for k, p in self.models.items()}, 1.0, self.taken)

    def price(self, model: str | None) -> Price | None:
        if model in self._cache:
            return self._cache[model]
        found = None
        if model:
            found = self.models.get(model)
            if found is None:
                found = self.models.get(_SNAPSHOT.sub("", model))  # claude-sonnet-4-5-20250929, gpt-4o-2024-08-06
            if found is None:
                self.unknown.add(model)
        self._cache[model] = found
        return found

    def cost(self, model: str | None, usage: Any, columns: list[tuple[int, ...]] | None = None) -> float:
        """USD at batch prices for one answer's usage, or for a list of answers' usages (then a request
        whose prompt reaches the model's long-context tier is priced at it); 0.0 for an unknown model
        (listed in .unknown). `columns`: the list's `zip(*usage)`, when the caller has it already."""
        p = self.price(model)
        if p is None or usage is None:
            return 0.0
        if not isinstance(usage, list):  # one Usage
            return self._priced(p, usage, self._is_long(p, usage))
        if not usage:
            return 0.0
        cols = columns if columns is not None else list(zip(*usage, strict=True))
        tier = p.long_context
        # no answer's prompt (input + cache writes + cache reads) past the tier: all priced at once
        if tier is None or max(map(add, map(add, cols[0], cols[2]), cols[3])) <= tier.above_input_tokens:
            return self._priced(p, [sum(col) for col in cols], False)
        # prices are linear in tokens: the answers at each tier are summed first, then priced once
        above = tier.above_input_tokens
        long = [u for u in usage if u[0] + u[2] + u[3] > above]
        short = [u for u in usage if u[0] + u[2] + u[3] <= above] if long else usage
        return sum(self._priced(p, [sum(col) for col in zip(*us, strict=True)], tier) for us, tier
                   in ((short, False), (long, True)) if us)

    @staticmethod
    def _is_long(p: Price, u: Sequence[int]) -> bool:
        # input + cache writes + cache reads: the prompt, as the providers measure it for the tier
        return p.long_context is not None and u[0] + u[2] + u[3] > p.long_context.above_input_tokens

    def _priced(self, p: Price, u: Sequence[int], long: bool) -> float:
        d = self.batch_discount
        one_hour = u[4] if len(u) > 4 else 0
        return (u[0] * p.rate("input", d, long) + u[1] * p.rate("output", d, long)
                + (u[2] - one_hour) * p.rate("cache_write", d, long)
                + one_hour * p.rate("cache_write_1h", d, long) + u[3] * p.rate("cache_read", d, long)) / 1e6


def cost_range(prices: PriceTable, model: str | None, totals: ModelTotals, ratio: float = 1.0
               ) -> tuple[float, float] | None:
    """(low, high) USD at batch prices: estimated input only (times `ratio`, the job's measured exact /
    heuristic), then plus every request's most output. The high end takes the long-context prices when
    the largest request may reach them. None when the model has no price: never guessed (the dry run
    says "unknown price")."""
    p = prices.price(model)
    if p is None:
        return None
    d = prices.batch_discount
    input_tokens = totals.input_tokens * ratio
    low = input_tokens * p.rate("input", d) / 1e6
    long = p.long_context is not None and totals.largest_input * ratio > p.long_context.above_input_tokens
    high = (input_tokens * p.rate("input", d, long) + totals.max_output_tokens * p.rate("output", d, long)) / 1e6
    return low, high


TOKEN_KINDS = ("input", "output", "cache_write", "cache_read", "cache_write_1h")
MODEL_PREFIX = "model/"  # ledger counters per model: model/<kind>/<model> (a model name may hold any character)
UNNAMED = "(unnamed)"  # answers whose line names no model


def model_counters(usages: Mapping[str | None, Sequence[Any]], by_model: Mapping[str | None, Usage],
                   costs: Mapping[str | None, float]) -> dict[str, float]:
    """One batch's answers per model, as ledger counters; they join the batch's other counts, so they are
    added in the same transaction that records it collected (exactly once, like every other count)."""
    out: dict[str, float] = {}
    for model, usage in by_model.items():
        name = model or UNNAMED
        out[f"{MODEL_PREFIX}requests/{name}"] = len(usages[model])
        for kind in TOKEN_KINDS:
            out[f"{MODEL_PREFIX}{kind}_tokens/{name}"] = getattr(usage, f"{kind}_tokens")
        out[f"{MODEL_PREFIX}cost_usd/{name}"] = costs[model]
    return out
