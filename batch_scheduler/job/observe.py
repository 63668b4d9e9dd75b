"""What a run tells an observer as it goes: each HTTP call's latency, and each batch's timings once its
results are durable. The daemon's metrics (and `run --metrics-file`) turn them into histograms.

Observations happen once per HTTP call and once per batch, never per request line. The default
`Observer` ignores everything, so a run without metrics pays one no-op call per event.

`JobStats` are a run's live counters: the stages bump them, the progress bar and status read them
(view/progress.py draws them).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field


class Observer:
    def http_call(self, endpoint: str, status: str, seconds: float) -> None:
        """One HTTP call ended: its endpoint, its status (or error name) and how long it took."""

    def batch_collected(self, turnaround_s: float | None, durable_s: float | None) -> None:
        """One batch's results are durable: create -> ended at the provider, and ended -> fsync'd here."""


def batch_times(submitted_at: float | None, ended_at: float | None, durable_at: float) -> tuple[float | None, float | None]:
    """(turnaround, durable delay) in seconds from epoch times; None where a time is unknown. A provider's
    clock may run ahead of ours: a negative span is counted as 0."""
    if ended_at is None:
        return None, None
    turnaround = max(0.0, ended_at - submitted_at) if submitted_at is not None else None
    return turnaround, max(0.0, durable_at - ended_at)


@dataclass
class JobStats:
    started: float = field(default_factory=time.monotonic)
    lines_read: int = 0
    accepted: int = 0
    rejected: int = 0
    submitted: int = 0  # requests sent in this run
    finished: int = 0  # final results written in this run
    finished_before: int = 0  # final results already written by earlier runs
    in_flight: int = 0  # batches
    retries: int = 0  # HTTP retries
    reading_done: bool = False
    first_submit_s: float | None = None
    expected_lines: int | None = None  # an estimate of the input's lines (plain files), until reading is done
    queue_unit: str = "requests"  # what the provider's queue counts: requests, or (estimated) tokens
    queued: int = 0  # of ours in the provider's queue now, in queue_unit
    queue_limit: int | None = None  # what admission lets into it now (learned, or the hard cap)
    queue_peak: int = 0
    queue_full: int = 0  # queue-full answers this run (429s at create, token-limit failures)
    waiting_retry: int = 0  # requests parked for another attempt, as the producer last counted
    next_retry_at: float | None = None  # epoch seconds: when the next of them may go
    turnaround_s: float | None = None  # the median turnaround of this job's batches so far (create to ended)

    def rate(self, now: float | None = None) -> float:
        elapsed = max(1e-9, (now if now is not None else time.monotonic()) - self.started)
        return self.finished / elapsed

    def total(self) -> tuple[int | None, bool]:
        """(total, estimated): the accepted requests once the input is read, else the estimate, if any."""
        if self.reading_done:
            return self.accepted, False
        if self.expected_lines:
            return max(self.expected_lines, self.lines_read), True
        return None, False

    def eta_s(self, now: float | None = None, wall: float | None = None) -> float | None:
        """Seconds until every request is finished: the finishing rate for what is left, but never less than
        the tail (parked requests wait for their next batch, which takes a round trip as observed), and never
        0 while work remains (at least 1 s; None when nothing tells)."""
        total, _ = self.total()
        rate, done = self.rate(now), self.finished + self.finished_before
        if not total or done >= total:
            return None
        by_rate = (total - done) / rate if rate > 0 else None
        tail = self.tail_s(wall)
        known = [x for x in (by_rate, tail) if x is not None]
        return max(1.0, *known) if known else None

    def tail_s(self, wall: float | None = None) -> float | None:
        """Seconds until the parked requests are back: their wait, then a round trip (None: none wait)."""
        if not self.waiting_retry:
            return None
        now = time.time() if wall is None else wall
        wait = max(0.0, self.next_retry_at - now) if self.next_retry_at is not None else 0.0
        return wait + (self.turnaround_s or 0.0)

    def tail_text(self, wall: float | None = None) -> str:
        """`37 requests wait for another attempt, next batch at 02:14, expected back about 03:10` (UTC)."""
        if not self.waiting_retry:
            return ""
        now = time.time() if wall is None else wall
        at = max(now, self.next_retry_at) if self.next_retry_at is not None else now
        text = f"{self.waiting_retry:,} request(s) wait for another attempt, next batch at {hh_mm(at)}"
        if self.turnaround_s is not None:
            text += f", expected back about {hh_mm(at + self.turnaround_s)}"
        return text

    def line(self, now: float | None = None) -> str:
        """The plain line (logs): every counter, words not symbols."""
        rate = self.rate(now)
        total = self.accepted if self.reading_done else None
        done = self.finished + self.finished_before
        eta = self.eta_s(now) if total else None
        of = f"/{total:,}" if total else ""
        queued = f"  {self.queue_text()}" if self.queue_limit is not None else ""
        tail = f"  {self.tail_text()}" if self.waiting_retry else ""
        return (f"read {self.lines_read:,}  submitted {self.submitted:,}  finished {done:,}{of}  "
                f"batches in flight {self.in_flight}{queued}  rejected {self.rejected:,}  retries {self.retries:,}  "
                f"{rate:,.0f} req/s" + (f" eta {eta:,.0f}s" if eta is not None else "") + tail)

    def queue_text(self) -> str:
        """`queued 180,000/200,000 requests` (OpenAI: `enqueued 1,200,000/2,000,000 tokens`)."""
        verb = "enqueued" if self.queue_unit == "tokens" else "queued"
        limit = f"/{self.queue_limit:,}" if self.queue_limit is not None else ""
        full = f" ({self.queue_full:,} queue-full)" if self.queue_full else ""
        return f"{verb} {self.queued:,}{limit} {self.queue_unit}{full}"


def hh_mm(epoch_s: float) -> str:
    """A UTC clock time, as --window and --finish-by take them."""
    return time.strftime("%H:%M", time.gmtime(epoch_s))
