"""--max-cost: no new batch once spend so far plus the estimate for batches in flight would pass the cap.

A batch's estimate is an upper bound: estimated input tokens plus every request's max_tokens as
output, at the model's batch price. Requests for models without a price count as free here (the
summary lists them), so the cap cannot be enforced for them; the run says so once.
"""

from __future__ import annotations

import logging
import math

import orjson

from .pricing import PriceTable

log = logging.getLogger("scheduler.budget")

CHARS_PER_TOKEN = 3.5


def estimate_line_cost(line: bytes, prices: PriceTable) -> float:
    """Upper-bound USD for one request line (Anthropic, OpenAI or inline form)."""
    obj = orjson.loads(line)
    params = obj.get("params") or obj.get("body") or {}
    price = prices.price(params.get("model"))
    if price is None:
        return 0.0
    text_chars = len(line) - len(orjson.dumps(obj.get("custom_id", "")))
    input_tokens = math.ceil(text_chars / CHARS_PER_TOKEN)
    output_tokens = int(params.get("max_tokens") or params.get("max_completion_tokens") or 0)
    return (input_tokens * price.input + output_tokens * price.output) * prices.batch_discount / 1e6


class Budget:
    def __init__(self, cap_usd: float | None, prices: PriceTable):
        self.cap_usd = cap_usd
        self.prices = prices
        self.in_flight: dict[int, float] = {}  # chunk id -> estimate
        self.stopped_at: str | None = None

    def estimate(self, lines: list[bytes]) -> float:
        if self.cap_usd is None:
            return 0.0
        return sum(estimate_line_cost(line, self.prices) for line in lines)

    def allows(self, spent_usd: float, estimate_usd: float) -> bool:
        if self.cap_usd is None:
            return True
        committed = spent_usd + sum(self.in_flight.values())
        if committed + estimate_usd <= self.cap_usd:
            return True
        self.stopped_at = (f"stopped at --max-cost ${self.cap_usd:,.2f}: spent ${spent_usd:,.4f}, "
                           f"in flight up to ${sum(self.in_flight.values()):,.4f}, the next batch up to "
                           f"${estimate_usd:,.4f}. Raise --max-cost and run the same command again to carry on")
        return False
