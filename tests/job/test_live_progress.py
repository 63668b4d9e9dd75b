"""progress= of run/arun: a callable gets the counters the bar draws; False shows nothing; "auto" outside a
notebook is what a run always did."""

from __future__ import annotations

import logging

import pytest

import batch_scheduler
from batch_scheduler.job.observe import JobStats
from batch_scheduler.job.view.live import Progress, in_notebook, progress_of, resolve

FAST = dict(poll_min=0.01, poll_max=0.05, batch_size=10, shards=4, api_key="sk-live-test")
ROWS = dict(template="Q: {q}", model="claude-haiku-4-5", max_tokens=20)


async def test_a_callable_gets_done_total_eta_spend_and_saving_and_a_final_report(sim, tmp_path):
    sim.config.processing_s = 0.3
    seen: list[Progress] = []
    result = await batch_scheduler.arun([{"q": i} for i in range(60)], tmp_path / "out", progress=seen.append,
                                        base_url=sim.url, **ROWS, **FAST)
    assert result.ok, result.message
    last = seen[-1]
    assert last.final and sum(p.final for p in seen) == 1
    assert (last.done, last.total, last.estimated, last.eta_s) == (60, 60, False, None)
    assert last.spent_usd == pytest.approx(result.summary["cost_usd"], abs=1e-6)
    assert last.standard_usd == pytest.approx(result.summary["standard_cost_usd"], abs=1e-6)
    assert last.saving_usd == pytest.approx(result.summary["saving_usd"], abs=1e-6) and last.saving_usd > 0
    assert [p.done for p in seen] == sorted(p.done for p in seen)  # it only goes forward
    assert last.text().startswith("60/60 requests | $0.")


async def test_progress_false_shows_nothing_not_even_the_log_line(sim, tmp_path, caplog):
    sim.config.processing_s = 0.2
    caplog.set_level(logging.INFO, logger="batch_scheduler.progress")
    result = await batch_scheduler.arun([{"q": i} for i in range(20)], tmp_path / "out", progress=False,
                                        base_url=sim.url, **ROWS, **FAST)
    assert result.ok and not [r for r in caplog.records if r.name == "batch_scheduler.progress"]


def test_progress_takes_auto_false_or_a_callable():
    assert not in_notebook()  # pytest is no IPython kernel: "auto" leaves a run as it was
    assert resolve("auto") == (None, False) and resolve(False) == (None, True)
    assert resolve(print) == (print, False)
    with pytest.raises(TypeError, match=r'^progress= must be "auto", False or a callable taking a Progress, not 3'):
        resolve(3)


def test_progress_of_reads_the_runs_counters():
    stats = JobStats(accepted=100, finished=30, finished_before=10, reading_done=True)
    p = progress_of(stats, 2.0, 0.5, now=stats.started + 10)
    assert (p.done, p.total, p.estimated, p.standard_usd, p.saving_usd) == (40, 100, False, 4.0, 2.0)
    assert p.eta_s == pytest.approx(20.0)  # 60 left at 3 a second
    assert progress_of(stats, 2.0, 0.5, final=True).eta_s is None
