"""Which lane a chunk goes by, batch or realtime: a value decided on the clock, and the options it reads.

    --mode realtime            every chunk goes realtime
    --finish-by WHEN           a chunk whose next batch round trip would end after WHEN goes realtime
    --window HH:MM-HH:MM       (UTC, repeatable) realtime calls are made only inside these hours

The deadline rule: the round trip a batch sent now is expected to take is the median turnaround of
this job's batches so far (create to ended, as the collector observed them). Before any batch came
back, it is at least as long as the oldest batch still out has been away; with nothing out and nothing
observed, it is unknown and the chunk goes by batch. A chunk goes realtime when now + that round trip
is past the deadline, and when the extra cost of realtime (the batch estimate held for it, at full
price instead of the batch discount) still fits under --max-cost. Without --max-cost nothing bounds
it: realtime costs at most 1/discount (2x) the batch price of what it sends.
"""

from __future__ import annotations

import enum
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from batch_scheduler.core.errors import UsageError
from batch_scheduler.core.settings import Settings

DAY_S = 86_400.0
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d)\s*$")
_UNIT_S = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": DAY_S}
_CLOCK = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*$")


class Lane(enum.Enum):
    BATCH = "batch"
    REALTIME = "realtime"


def deadline_of(text: str, now: float) -> float:
    """--finish-by as epoch seconds: a duration from now (`90m`, `2h`), a clock time in UTC (`06:00`: its
    next occurrence), or an ISO date-time (`2025-07-01T06:00Z`). UsageError when unreadable or past."""
    if m := _DURATION.match(text):
        return now + float(m.group(1)) * _UNIT_S[m.group(2)]
    if m := _CLOCK.match(text):
        at = _clock_today(int(m.group(1)), int(m.group(2)), now, "--finish-by")
        return at if at > now else at + DAY_S
    try:
        when = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(f"--finish-by {text!r}: expected a duration (90m, 2h), a UTC clock time (06:00) or an "
                         f"ISO date-time (2025-07-01T06:00Z)") from None
    at = (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()
    if at <= now:
        raise UsageError(f"--finish-by {text!r}: that is in the past")
    return at


def _clock_today(hour: int, minute: int, now: float, flag: str) -> float:
    if hour > 23 or minute > 59:
        raise UsageError(f"{flag}: {hour:02d}:{minute:02d} is not a time of day")
    day = datetime.fromtimestamp(now, UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return (day + timedelta(hours=hour, minutes=minute)).timestamp()


@dataclass(frozen=True)
class Windows:
    """--window spans as (start, end) seconds after UTC midnight; an end before its start spans midnight."""

    spans: tuple[tuple[float, float], ...] = ()

    @classmethod
    def parse(cls, texts: tuple[str, ...] | list[str]) -> Windows:
        spans = []
        for text in texts:
            start, sep, end = text.partition("-")
            a, b = _CLOCK.match(start), _CLOCK.match(end)
            if not (sep and a and b):
                raise UsageError(f"--window {text!r}: expected HH:MM-HH:MM (UTC), e.g. 16:30-00:30")
            span = tuple(_clock_today(int(m.group(1)), int(m.group(2)), 0.0, f"--window {text!r}") for m in (a, b))
            if span[0] == span[1]:
                raise UsageError(f"--window {text!r}: it never opens (it ends when it starts)")
            spans.append((span[0], span[1]))
        return cls(tuple(spans))

    def open_at(self, now: float) -> bool:
        if not self.spans:
            return True
        t = now % DAY_S
        return any(a <= t < b if a < b else (t >= a or t < b) for a, b in self.spans)

    def wait_s(self, now: float) -> float:
        """Seconds until a window is open (0 when one is)."""
        if self.open_at(now):
            return 0.0
        t = now % DAY_S
        return min((a - t) % DAY_S for a, _ in self.spans)


def lanes_problem(settings: Settings, realtime_api: str | None, now: float) -> str | None:
    """Why these options cannot run (exit 2), or None: a deadline unreadable or past, a window that never
    opens, the realtime lane asked of a provider without a realtime endpoint."""
    try:
        if settings.finish_by:
            deadline_of(settings.finish_by, now)
        Windows.parse(settings.window)
    except UsageError as err:
        return str(err)
    wants = settings.mode == "realtime" or settings.finish_by or settings.at_deadline == "realtime"
    if wants and realtime_api is None:
        asked = "--mode realtime" if settings.mode == "realtime" else "--finish-by"
        return f"{asked}: --provider {settings.provider} has no realtime endpoint (anthropic and openai have one)"
    return None


class Route:
    """Decides each chunk's lane (`lane`), on a clock tests script."""

    def __init__(self, settings: Settings, *, turnaround_s: Callable[[], float | None],
                 oldest_out_s: Callable[[float], float | None], clock: Callable[[], float] = time.time):
        self._clock = clock
        self.realtime_only = settings.mode == "realtime"
        self.deadline = deadline_of(settings.finish_by, clock()) if settings.finish_by else None
        self.at_deadline = settings.at_deadline
        self.windows = Windows.parse(settings.window)
        self._turnaround_s = turnaround_s  # the median observed turnaround, None before any
        self._oldest_out_s = oldest_out_s  # how long the oldest batch still out has been away, None if none

    @property
    def active(self) -> bool:
        return self.realtime_only or self.deadline is not None

    def round_trip_s(self, now: float) -> float | None:
        """What a batch sent now is expected to take, as observed in this job (None: nothing to go by)."""
        seen = self._turnaround_s()
        if seen is not None:
            return seen
        return self._oldest_out_s(now)

    def lane(self) -> Lane:
        if self.realtime_only:
            return Lane.REALTIME
        if self.deadline is None:
            return Lane.BATCH
        now = self._clock()
        if now >= self.deadline:
            return Lane.REALTIME
        trip = self.round_trip_s(now)
        return Lane.REALTIME if trip is not None and now + trip > self.deadline else Lane.BATCH

    def past_deadline(self) -> bool:
        return self.deadline is not None and self._clock() >= self.deadline
