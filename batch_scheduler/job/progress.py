"""What a user sees while a job runs: a live line on a terminal, a plain log line every few seconds otherwise."""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from dataclasses import dataclass, field
from typing import IO

log = logging.getLogger("batch_scheduler.progress")


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
    queue_unit: str = "requests"  # what the provider's queue counts: requests, or (estimated) tokens
    queued: int = 0  # of ours in the provider's queue now, in queue_unit
    queue_limit: int | None = None  # what admission lets into it now (learned, or the hard cap)
    queue_peak: int = 0
    queue_full: int = 0  # queue-full answers this run (429s at create, token-limit failures)

    def rate(self) -> float:
        elapsed = max(1e-9, time.monotonic() - self.started)
        return self.finished / elapsed

    def line(self) -> str:
        rate = self.rate()
        total = self.accepted if self.reading_done else None
        done = self.finished + self.finished_before
        eta = ""
        if total and rate > 0 and done < total:
            eta = f" eta {max(0.0, (total - done) / rate):,.0f}s"
        of = f"/{total:,}" if total else ""
        return (f"read {self.lines_read:,}  submitted {self.submitted:,}  finished {done:,}{of}  "
                f"batches in flight {self.in_flight}  {self.queue_text()}  rejected {self.rejected:,}  "
                f"retries {self.retries:,}  {rate:,.0f} req/s{eta}")

    def queue_text(self) -> str:
        """`queued 180,000/200,000 requests` (OpenAI: `enqueued 1,200,000/2,000,000 tokens`)."""
        verb = "enqueued" if self.queue_unit == "tokens" else "queued"
        limit = f"/{self.queue_limit:,}" if self.queue_limit is not None else ""
        full = f" ({self.queue_full:,} queue-full)" if self.queue_full else ""
        return f"{verb} {self.queued:,}{limit} {self.queue_unit}{full}"


async def show_progress(stats: JobStats, *, tty: bool, stream: IO[str] = sys.stderr,
                        every_s: float | None = None) -> None:
    """Runs until cancelled."""
    interval = every_s or (0.5 if tty else 5.0)
    try:
        while True:
            await asyncio.sleep(interval)
            if tty:
                stream.write("\r\x1b[2K" + stats.line())
                stream.flush()
            else:
                log.info("progress: %s", stats.line())
    finally:
        if tty:
            stream.write("\r\x1b[2K")
            stream.flush()
