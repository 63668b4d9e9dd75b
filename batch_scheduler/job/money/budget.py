"""--max-cost: no new batch once spend so far plus the estimate for batches in flight would pass the cap.

A batch's estimate is the top of the dry run's range for its lines, from the same estimator
(`estimate.tally`, `pricing.cost_range`): estimated input tokens (scaled by the ratio the job measured
on a sample, see estimate.measure) plus every request's most output tokens, at the batch price of the
request's model. So a cap at the dry run's upper figure lets the whole job through, and a lower one
stops it where the dry run says it would.

The cap fails closed: a job under --max-cost in which any model has no price is refused before
anything is sent (`unpriced_message`, checked by the engine over the models of every accepted
request). Should a model without a price still reach `estimate` (it cannot, after that check), its
requests count nothing against the cap, and the run says so once per model.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from batch_scheduler.job.money.pricing import PriceTable, cost_range, tally

log = logging.getLogger("batch_scheduler.budget")


def unpriced_models(prices: PriceTable, models: Iterable[str | None]) -> list[str]:
    """The models (sorted; "" for requests naming none) that the price table cannot price."""
    return sorted({m or "" for m in models if prices.price(m or None) is None})


def unpriced_message(models: list[str], requests: dict[str, int] | None = None) -> str:
    """Why a job under --max-cost is refused, and what to do about it."""
    names = ", ".join(f"{m or '(no model)'}" + (f" ({requests[m]:,} request(s))" if requests and m in requests
                                                 else "") for m in models)
    return (f"--max-cost cannot hold this job: the price table has no price for {names}. Give the price(s) "
            f"with --prices FILE (the shape of batch_scheduler/data/prices.json), or run without --max-cost. "
            f"Nothing was submitted")


class Budget:
    def __init__(self, cap_usd: float | None, prices: PriceTable, provider_name: str | None = None):
        self.cap_usd = cap_usd
        self.prices = prices
        self.provider_name = provider_name  # whose lines: read as the dry run reads them (a Gemini request too)
        self.ratio = 1.0  # exact / heuristic input tokens, measured on a sample of the job (estimate.measure)
        self.in_flight: dict[int, float] = {}  # chunk id -> estimate
        self.stopped_at: str | None = None
        self.unpriced: set[str | None] = set()  # models whose requests the cap cannot count (said once)

    def estimate(self, lines: list[bytes]) -> float:
        """Upper-bound USD of a batch of request lines (as sent); 0.0 without a cap (nothing to hold)."""
        if self.cap_usd is None:
            return 0.0
        high = 0.0
        for model, totals in tally(lines, self.provider_name).items():
            cost = cost_range(self.prices, model, totals, self.ratio)
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
