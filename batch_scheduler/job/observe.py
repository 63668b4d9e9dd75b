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

    def eta_s(self, now: float | None = None) -> float | None:
        total, _ = self.total()
        rate, done = self.rate(now), self.finished + self.finished_before
        if not total or rate <= 0 or done >= total:
            return None
        return (total - done) / rate

    def line(self, now: float | None = None) -> str:
        """The plain line (logs): every counter, words not symbols."""
        rate = self.rate(now)
        total = self.accepted if self.reading_done else None
        done = self.finished + self.finished_before
        eta = self.eta_s(now) if total else None
        of = f"/{total:,}" if total else ""
        queued = f"  {self.queue_text()}" if self.queue_limit is not None else ""
        return (f"read {self.lines_read:,}  submitted {self.submitted:,}  finished {done:,}{of}  "
                f"batches in flight {self.in_flight}{queued}  rejected {self.rejected:,}  retries {self.retries:,}  "
                f"{rate:,.0f} req/s" + (f" eta {eta:,.0f}s" if eta is not None else ""))

    def queue_text(self) -> str:
        """`queued 180,000/200,000 requests` (OpenAI: `enqueued 1,200,000/2,000,000 tokens`)."""
        verb = "enqueued" if self.queue_unit == "tokens" else "queued"
        limit = f"/{self.queue_limit:,}" if self.queue_limit is not None else ""
        full = f" ({self.queue_full:,} queue-full)" if self.queue_full else ""
        return f"{verb} {self.queued:,}{limit} {self.queue_unit}{full}"
