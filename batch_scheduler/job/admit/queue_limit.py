"""How much of ours one provider queue holds, learned by asking it: a pure object, its clock injected.

Units are what the provider counts: requests waiting in the organisation's processing queue
(Anthropic, inline) or input tokens enqueued for one model (OpenAI). The learner is told what happened
and asked what may go; it never waits and does no I/O (`queue_budget` does both).

    verdict(in_flight, units, probing)   GO, PROBE or WAIT: a batch of `units` on top of `in_flight`
    accepted(level)                      the provider took a batch that brought ours to `level`
    refused(in_flight, units, stated)    it said the queue is full (a 429 at create, or OpenAI's
                                         token-limit failure), the batch being `units` on top of
                                         `in_flight`; `stated` is the limit its message names

The rules:
- `confirmed` is the most of ours the provider has held. Batches go freely up to it; above it one
  batch at a time goes, as a probe, and the next waits for the provider's answer to it. So the limit
  grows as fast as answers come while no queue-full answer comes back (each accepted probe raises
  `confirmed` by a batch), and a limit below the documented start costs one queue-full answer, not
  one per upload in the air. Nothing goes past the hard cap (the user's, else the highest tier's).
- A queue-full answer makes a ceiling: the stated limit when the provider names one, else the level
  it refused. What may go drops to the stated limit (times `margin`, for units we only estimate) if
  ours passed it, else to what the provider holds of ours now (multiplicative decrease to the knee,
  not a blind halving). No probe goes above the ceiling (nor above the stated limit times `margin`)
  for `reprobe_s`; then it is forgotten and growth resumes (a tier may have been raised, another
  user of the account may have finished).
- A queue-full answer while nothing of ours is queued says nothing about our share (the account's
  queue is full of others' work): nothing is learned, unless the batch alone is over the stated limit
  (then the stated limit is what fits, and the batch must be split: `part_limit`). The next try waits
  a backoff (`backoff_s`: by default 5 s doubling to 5 minutes), since no batch of ours will end to
  wake it; `alone` counts such answers in a row.
- `start` (the documented lowest tier, or the hard cap the user gave) is the limit reported until a
  ceiling is found; what was learned is kept (`to_doc` / `restore`, in the ledger) for a resumed run.
"""

from __future__ import annotations

import enum
import math
import time
from collections.abc import Callable
from typing import Any

REPROBE_S = 600.0
BACKOFF_S = (5.0, 300.0)  # first and longest wait after a queue-full answer with nothing of ours queued


class Verdict(enum.Enum):
    GO = "go"  # within what the provider has held of ours
    PROBE = "probe"  # above it: goes alone, and its answer teaches the limit
    WAIT = "wait"  # until a batch ends, a probe is answered, or the backoff passes


class LimitLearner:
    def __init__(self, *, start: int, cap: int, margin: float = 1.0, reprobe_s: float = REPROBE_S,
                 backoff_s: tuple[float, float] = BACKOFF_S, clock: Callable[[], float] = time.time):
        if start < 1 or cap < 1:
            raise ValueError("start and cap must be at least 1")
        self.start = min(start, cap)
        self.cap = cap
        self.margin = margin
        self.reprobe_s = reprobe_s
        self.backoff_s = backoff_s
        self._clock = clock
        self.confirmed = 0  # the most of ours the provider has held (since the last queue-full answer)
        self.ceiling: int | None = None  # the lowest level known to be refused; None: none known
        self.refused_at: float | None = None
        self.stated: int | None = None  # the limit the provider last named
        self.queue_full = 0  # queue-full answers seen
        self.backoff_until = 0.0
        self.alone = 0  # queue-full answers in a row with nothing of ours queued
        self._backoff_s = 0.0

    # -- asking ---------------------------------------------------------------------------------

    @property
    def top(self) -> int:
        """The highest level a probe may reach now: the hard cap, or under a ceiling still remembered."""
        if self.ceiling is not None and self.refused_at is not None:
            if self._clock() - self.refused_at < self.reprobe_s:
                top = min(self.cap, self.ceiling - 1)
                if self.stated is not None:  # the provider's own figure, less the margin of our estimates
                    top = min(top, math.floor(self.stated * self.margin))
                return max(1, top)
            self.ceiling = None  # long enough ago: find out again
        return self.cap

    @property
    def limit(self) -> int:
        """What it admits now, as `status` shows it: the documented start until something is learned."""
        return self.confirmed if self.ceiling is not None else max(self.confirmed, min(self.start, self.top))

    def verdict(self, in_flight: int, units: int, probing: bool) -> Verdict:
        if self._clock() < self.backoff_until:
            return Verdict.WAIT
        level = in_flight + units
        if in_flight <= 0:  # nothing of ours queued: one batch always may go, whatever its size
            return Verdict.GO if level <= self.confirmed else Verdict.PROBE
        if level <= min(self.confirmed, self.top):
            return Verdict.GO
        if probing or level > self.top:
            return Verdict.WAIT
        return Verdict.PROBE

    def part_limit(self, batches: int) -> int:
        """Units a batch should stay under so that about `batches` of them fill what the queue holds: the
        limit the provider stated, else the ceiling found; before either, the hard cap (a probe is a whole
        batch)."""
        if self.stated is not None:
            bound = min(self.cap, math.floor(self.stated * self.margin))
        else:
            bound = self.top if self.ceiling is not None else self.cap
        return max(1, bound // max(1, batches))

    # -- being told -----------------------------------------------------------------------------

    def accepted(self, level: int) -> bool:
        """The provider holds a batch that brought ours to `level`. True if what it admits grew."""
        self._backoff_s = 0.0
        self.backoff_until = 0.0
        self.alone = 0
        level = min(level, self.top)
        if level <= self.confirmed:
            return False
        self.confirmed = level
        return True

    def refused(self, in_flight: int, units: int, stated: int | None = None) -> None:
        """A queue-full answer for a batch of `units` on top of `in_flight` of ours."""
        now = self._clock()
        self.queue_full += 1
        if stated is not None and stated > 0:
            self.stated = stated
        allowed = math.floor(stated * self.margin) if stated else None
        level = in_flight + units
        if in_flight <= 0:
            if allowed is not None and units > allowed:  # the batch alone is over the limit: split it
                self._ceiling_at(min(level, stated + 1) if stated else level, now)
                self.confirmed = min(allowed, self.cap)  # the provider's own figure: that much fits
            else:  # the queue is full of others' work (or we cannot tell): wait, learn nothing
                first, longest = self.backoff_s
                self._backoff_s = min(longest, max(first, self._backoff_s * 2))
                self.backoff_until = now + self._backoff_s
                self.alone += 1
            return
        self.alone = 0
        self._ceiling_at(min(level, stated + 1) if stated else level, now)
        if allowed is not None and stated and level > stated:
            self.confirmed = min(allowed, self.cap)  # ours passed the named limit: exactly that much fits
        else:
            self.confirmed = min(self.confirmed, in_flight, allowed if allowed is not None else in_flight)

    def _ceiling_at(self, level: int, now: float) -> None:
        self.ceiling = level if self.ceiling is None or self.refused_at is None else min(self.ceiling, level)
        self.refused_at = now

    # -- kept in the ledger ---------------------------------------------------------------------

    def to_doc(self) -> dict[str, Any]:
        return {"confirmed": self.confirmed, "ceiling": self.ceiling, "refused_at": self.refused_at,
                "stated": self.stated, "queue_full": self.queue_full}

    def restore(self, doc: Any) -> None:
        """What an earlier run learned (`to_doc`); anything unreadable is ignored (it is only a head start)."""
        if not isinstance(doc, dict):
            return

        def number(name: str) -> float | None:
            value = doc.get(name)
            return value if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0 else None

        confirmed, ceiling, refused_at, stated = (number(n) for n in ("confirmed", "ceiling", "refused_at", "stated"))
        self.confirmed = min(int(confirmed or 0), self.cap)
        self.ceiling = int(ceiling) if ceiling else None
        self.refused_at = float(refused_at) if refused_at is not None and self.ceiling else None
        if self.ceiling is not None and self.refused_at is None:
            self.ceiling = None
        self.stated = int(stated) if stated else None
        self.queue_full = int(number("queue_full") or 0)
