"""What a user sees while a job runs: a live bar on a terminal, a plain log line every few seconds otherwise.

On a terminal, one line redrawn in place every half second, cut to the terminal's width:

    [█████████░░░░░░░░░░░░░░░]  41%  49,200/120,000  eta 12s | 8 batches, queued 80,000/200,000 requests |
    $1.2300 of $5.0000 | retries 3, rejected 12 | 5,900 req/s

The total is the accepted requests once the input is read, and an estimate from the input's size
("~120,000") before. `queued` shows our requests waiting in the provider's queue against admission's
current limit (OpenAI: `enqueued` estimated tokens of the model; `JobStats.queue_text`). Elsewhere (a log file,
journald) `JobStats.line()` is logged every 5 s. Nothing here runs on the hot path: the pipeline
only bumps counters; this task reads them.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import sys
from collections.abc import Callable
from typing import IO

from batch_scheduler.job.observe import JobStats

log = logging.getLogger("batch_scheduler.progress")

BAR_CELLS = 24
CLEAR = "\r\x1b[2K"  # to the start of the line, and erase it

_drawn: dict[int, str] = {}  # id(stream) -> the bar now on that terminal (BarAwareHandler redraws it)


def clock_text(seconds: float) -> str:
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def money(usd: float) -> str:
    return f"${usd:,.2f}" if usd >= 100 else f"${usd:,.4f}"


def bar_line(stats: JobStats, *, spent_usd: float | None = None, max_cost_usd: float | None = None,
             width: int = 120, unicode: bool = True, now: float | None = None) -> str:
    """The terminal's line, at most width - 1 characters (a full line would wrap and break the redraw)."""
    total, estimated = stats.total()
    done = stats.finished + stats.finished_before
    full, empty = ("█", "░") if unicode else ("#", "-")
    if total:
        frac = min(1.0, done / total)
        cells = int(frac * BAR_CELLS)
        head = f"[{full * cells}{empty * (BAR_CELLS - cells)}] {frac * 100:3.0f}%  {done:,}/{'~' if estimated else ''}{total:,}"
    else:
        head = f"[{empty * BAR_CELLS}]   ?%  {done:,}/? (reading)"
    eta = stats.eta_s(now)
    if eta is not None:
        head += f"  eta {clock_text(eta)}"
    flight = f"{stats.in_flight} batch{'es' if stats.in_flight != 1 else ''}"
    if stats.queue_limit is not None:
        flight += f", {stats.queue_text()}"
    parts = [head, flight]
    if stats.waiting_retry:
        parts.append(stats.tail_text())
    if spent_usd is not None:
        parts.append(money(spent_usd) + (f" of {money(max_cost_usd)}" if max_cost_usd is not None else ""))
    parts.append(f"retries {stats.retries:,}, rejected {stats.rejected:,}")
    parts.append(f"{stats.rate(now):,.0f} req/s")
    text = " | ".join(parts)
    return text if len(text) < width else text[: max(0, width - 2)] + "…"


def _is_unicode(stream: IO[str]) -> bool:
    return (getattr(stream, "encoding", None) or "").lower().replace("-", "") in ("utf8", "utf16", "utf32")


async def show_progress(stats: JobStats, *, tty: bool, stream: IO[str] = sys.stderr, every_s: float | None = None,
                        spent: Callable[[], float] | None = None, max_cost_usd: float | None = None,
                        width: Callable[[], int] | None = None) -> None:
    """Runs until cancelled: redraws the bar on a terminal, logs the plain line otherwise."""
    interval = every_s or (0.5 if tty else 5.0)
    columns = width or (lambda: shutil.get_terminal_size((120, 24)).columns)
    unicode = _is_unicode(stream)
    try:
        while True:
            await asyncio.sleep(interval)
            if tty:
                text = bar_line(stats, spent_usd=spent() if spent else None, max_cost_usd=max_cost_usd,
                                width=columns(), unicode=unicode)
                _drawn[id(stream)] = text
                stream.write(CLEAR + text)
                stream.flush()
            else:
                total, _ = stats.total()
                log.info("progress: %s", stats.line(), extra={
                    "finished": stats.finished + stats.finished_before, "total": total,
                    "batches_in_flight": stats.in_flight, "retries": stats.retries, "rejected": stats.rejected})
    finally:
        if tty:
            _drawn.pop(id(stream), None)
            stream.write(CLEAR)
            stream.flush()


class BarAwareHandler(logging.StreamHandler):
    """A log handler for the terminal a bar is drawn on: a record is written on a line of its own
    (the bar is erased first, and drawn again below it), never glued to the end of the bar."""

    def emit(self, record: logging.LogRecord) -> None:
        bar = _drawn.get(id(self.stream))
        if bar is None:
            super().emit(record)
            return
        try:
            self.stream.write(CLEAR)
            super().emit(record)  # the record and its newline
            self.stream.write(bar)
            self.flush()
        except Exception:  # noqa: BLE001 - as logging.StreamHandler does
            self.handleError(record)
