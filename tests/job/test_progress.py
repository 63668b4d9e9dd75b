"""The progress a user sees: on a terminal a bar with percentage, ETA, batches and queue, spend against
--max-cost, retries and rejects, redrawn in place and cut to the width; elsewhere a plain log line."""

from __future__ import annotations

import asyncio
import io
import logging

import pytest

from batch_scheduler.job.view.progress import BarAwareHandler, JobStats, bar_line, show_progress

pytestmark = pytest.mark.timeout(20)


class FakeTerminal(io.StringIO):
    def __init__(self, encoding: str = "utf-8"):
        super().__init__()
        self._encoding = encoding

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return self._encoding

    def isatty(self) -> bool:
        return True

    def screen(self) -> str:
        """What the terminal shows now: the text after the last carriage return and line clear."""
        return self.getvalue().rsplit("\r\x1b[2K", 1)[-1]


def stats(**changes) -> JobStats:
    base = dict(started=1000.0, lines_read=120_000, accepted=120_000, submitted=80_000, finished=48_000,
                in_flight=8, retries=3, rejected=12, reading_done=True)
    return JobStats(**{**base, **changes})


def test_a_bar_with_percentage_eta_spend_against_the_cap_retries_and_rejects():
    line = bar_line(stats(), spent_usd=1.23, max_cost_usd=5.0, now=1000.0 + 8.0, width=200)  # 6,000 req/s
    assert line == ("[█████████░░░░░░░░░░░░░░░]  40%  48,000/120,000  eta 12s | 8 batches | $1.2300 of $5.0000 | "
                    "retries 3, rejected 12 | 6,000 req/s")


def test_queued_requests_at_the_provider_show_against_the_limit_when_admission_measures_them():
    line = bar_line(stats(queued=80_000, queue_limit=200_000, in_flight=1), now=1008.0, width=200)
    assert " | 1 batch, queued 80,000/200,000 requests | " in line
    tokens = bar_line(stats(queue_unit="tokens", queued=1_200_000, queue_limit=2_000_000, queue_full=2), now=1008.0,
                      width=200)
    assert ", enqueued 1,200,000/2,000,000 tokens (2 queue-full) | " in tokens
    assert "queued" not in bar_line(stats(), now=1008.0, width=200)


def test_before_the_input_is_read_the_total_is_an_estimate_and_without_one_a_question_mark():
    est = bar_line(stats(reading_done=False, accepted=60_000, lines_read=60_000, expected_lines=150_000,
                         finished=30_000, finished_before=0), now=1010.0, width=200)
    assert est.startswith("[████░░░░░░░░░░░░░░░░░░░░]  20%  30,000/~150,000  eta 40s | ")
    unknown = bar_line(stats(reading_done=False, expected_lines=None, finished=0), now=1001.0, width=200)
    assert unknown.startswith("[░░░░░░░░░░░░░░░░░░░░░░░░]   ?%  0/? (reading) | 8 batches")


def test_a_resumed_job_counts_what_earlier_runs_finished_and_a_long_eta_reads_in_hours():
    line = bar_line(stats(finished=1_000, finished_before=59_000), now=1100.0, width=200)  # 10 req/s
    assert line.startswith("[████████████░░░░░░░░░░░░]  50%  60,000/120,000  eta 1h40m | ")


def test_the_line_is_cut_to_the_terminal_width_and_plain_without_unicode():
    line = bar_line(stats(), spent_usd=1.0, now=1008.0, width=60, unicode=False)
    assert len(line) == 59 and line.endswith("…")
    assert line.startswith("[#########---------------]  40%  48,000/120,000")


async def test_on_a_terminal_the_bar_is_redrawn_in_place_and_cleared_at_the_end():
    term = FakeTerminal()
    s = stats(started=0.0)
    task = asyncio.create_task(show_progress(s, tty=True, stream=term, every_s=0.001, spent=lambda: 0.5,
                                             max_cost_usd=2.0, width=lambda: 200))
    while term.getvalue().count("\r\x1b[2K") < 2:
        await asyncio.sleep(0.001)
    shown = term.screen()
    assert shown.startswith("[█████████░░░░░░░░░░░░░░░]  40%  48,000/120,000")
    assert " | 8 batches | $0.5000 of $2.0000 | retries 3, rejected 12 | " in shown
    assert "\n" not in term.getvalue()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert term.getvalue().endswith("\r\x1b[2K")  # the line is gone; the outcome is printed on a clean line


async def test_a_terminal_without_utf8_gets_plain_characters():
    term = FakeTerminal(encoding="ascii")
    task = asyncio.create_task(show_progress(stats(started=0.0), tty=True, stream=term, every_s=0.001,
                                             width=lambda: 200))
    while "\r\x1b[2K[" not in term.getvalue():
        await asyncio.sleep(0.001)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert "[#########---------------]" in term.getvalue()
    term.getvalue().encode("ascii")  # nothing the terminal cannot show


async def test_elsewhere_the_plain_line_is_logged(caplog):
    stream = io.StringIO()
    with caplog.at_level(logging.INFO, logger="batch_scheduler.progress"):
        task = asyncio.create_task(show_progress(stats(), tty=False, stream=stream, every_s=0.001))
        while not caplog.records:
            await asyncio.sleep(0.001)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert stream.getvalue() == ""
    msg = caplog.records[0].getMessage()
    assert msg.startswith("progress: read 120,000  submitted 80,000  finished 48,000/120,000  batches in flight 8  "
                          "rejected 12  retries 3  ")


async def test_a_log_line_while_the_bar_is_drawn_goes_above_it_and_the_bar_comes_back():
    term = FakeTerminal()
    handler = BarAwareHandler(term)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    logger = logging.getLogger("test.progress.bar")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        task = asyncio.create_task(show_progress(stats(started=0.0), tty=True, stream=term, every_s=0.001,
                                                 width=lambda: 200))
        while "\r\x1b[2K[" not in term.getvalue():
            await asyncio.sleep(0.001)
        logger.warning("stopped at --max-cost $1.00")
        lines = term.getvalue().split("\n")
        assert lines[-2].rsplit("\r\x1b[2K", 1)[-1] == "WARNING stopped at --max-cost $1.00"  # a line of its own
        assert lines[-1].startswith("[█████████░░░░░░░░░░░░░░░]  40%")  # and the bar below it
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        logger.warning("after")  # no bar any more: written as is
        assert term.getvalue().endswith("\r\x1b[2KWARNING after\n")
    finally:
        logger.removeHandler(handler)
