"""--max-cost: no new batch once spend so far plus the estimate for batches in flight would pass the cap.

A batch's estimate is the top of the dry run's range for its lines, from the same estimator
(`pricing.tally`, `pricing.cost_range`): estimated input tokens plus every request's most output
tokens, at the batch price of the request's model. So a cap at the dry run's upper figure lets the
whole job through, and a lower one stops it where the dry run says it would. A model without a price
is "unknown price" in the dry run, never guessed: here its requests count nothing against the cap,
and the run says so once per model.
"""

from __future__ import annotations

import logging

from batch_scheduler.job.pricing import PriceTable, cost_range, tally

log = logging.getLogger("batch_scheduler.budget")


class Budget:
    def __init__(self, cap_usd: float | None, prices: PriceTable):
        self.cap_usd = cap_usd
        self.prices = prices
        self.in_flight: dict[int, float] = {}  # chunk id -> estimate
        self.stopped_at: str | None = None
        self.unpriced: set[str | None] = set()  # models whose requests the cap cannot count (said once)

    def estimate(self, lines: list[bytes]) -> float:
        """Upper-bound USD of a batch of request lines (as sent); 0.0 without a cap (nothing to hold)."""
        if self.cap_usd is None:
            return 0.0
        high = 0.0
        for model, totals in tally(lines).items():
            cost = cost_range(self.prices, model, totals)
            if cost is not None:
                high += cost[1]
            elif model not in self.unpriced:
                self.unpriced.add(model)
                log.warning("--max-cost cannot count requests for %s: the price table has no price for it "
                            "(give one with --prices FILE)", model or "requests without a model")
        return high

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
