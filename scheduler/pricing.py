"""Prices per model and what a job costs: tokens x price x batch discount, per token kind.

The table ships in `scheduler/data/prices.json` (standard prices per million tokens and the batch
discount); a user file given with --prices (same shape) overrides models one by one. A model the
table does not know costs None ("unknown"), never a guess.
"""

from __future__ import annotations

import json
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
