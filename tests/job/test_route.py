"""The deadline rule, windows and the lane options, on a scripted clock."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from batch_scheduler.core.errors import UsageError
from batch_scheduler.job.engine import Engine, ExitCode
from batch_scheduler.job.send.route import Lane, Route, Windows, deadline_of, lanes_problem

from ..conftest import fast_settings

T0 = datetime(2025, 7, 1, 1, 0, tzinfo=UTC).timestamp()  # 01:00 UTC


class Clock:
    def __init__(self, now: float = T0):
        self.now = now

    def __call__(self) -> float:
        return self.now


def route(clock: Clock, *, finish_by: str | None = "2h", turnaround: float | None = None,
          out_for: float | None = None, **changes) -> Route:
    settings = fast_settings("http://sim", finish_by=finish_by, **changes)
    return Route(settings, turnaround_s=lambda: turnaround, oldest_out_s=lambda now: out_for, clock=clock)


def test_with_nothing_observed_a_chunk_goes_by_batch_until_the_deadline():
    clock = Clock()
    r = route(clock)
    assert r.lane() is Lane.BATCH
    clock.now = T0 + 2 * 3600 - 1
    assert r.lane() is Lane.BATCH
    clock.now = T0 + 2 * 3600
    assert r.lane() is Lane.REALTIME and r.past_deadline()


def test_a_chunk_goes_realtime_once_its_observed_round_trip_would_end_after_the_deadline():
    clock = Clock()
    r = route(clock, turnaround=3000.0)  # batches come back in 50 minutes
    clock.now = T0 + 7200 - 3000  # a batch sent now ends exactly at the deadline
    assert r.lane() is Lane.BATCH
    clock.now += 1
    assert r.lane() is Lane.REALTIME


def test_before_any_batch_came_back_the_oldest_batch_out_bounds_the_round_trip():
    clock = Clock(T0 + 3600)
    assert route(clock, out_for=3599.0).lane() is Lane.BATCH
    assert route(Clock(T0), out_for=3601.0, finish_by="01:00").lane() is Lane.BATCH  # 01:00 is tomorrow's
    r = route(Clock(T0), out_for=3601.0, finish_by="1h")
    assert r.lane() is Lane.REALTIME


def test_mode_realtime_sends_everything_realtime_and_no_deadline_sends_nothing():
    assert route(Clock(), finish_by=None, mode="realtime").lane() is Lane.REALTIME
    assert route(Clock(), finish_by=None, turnaround=1e9).lane() is Lane.BATCH


@pytest.mark.parametrize(("text", "expected"), [
    ("90m", T0 + 5400), ("2h", T0 + 7200), ("1.5s", T0 + 1.5), ("06:30", T0 + 5.5 * 3600),
    ("00:30", T0 + 23.5 * 3600), ("2025-07-01T03:00Z", T0 + 7200), ("2025-07-01T03:00", T0 + 7200),
])
def test_finish_by_reads_durations_clock_times_and_iso_times(text, expected):
    assert deadline_of(text, T0) == expected


@pytest.mark.parametrize(("text", "message"), [
    ("2025-06-30T23:00Z", "--finish-by '2025-06-30T23:00Z': that is in the past"),
    ("soon", "--finish-by 'soon': expected a duration (90m, 2h), a UTC clock time (06:00) or an ISO date-time "
             "(2025-07-01T06:00Z)"),
    ("25:00", "--finish-by: 25:00 is not a time of day"),
])
def test_an_unusable_deadline_is_named(text, message):
    with pytest.raises(UsageError) as caught:
        deadline_of(text, T0)
    assert str(caught.value) == message


def test_windows_open_and_close_on_utc_hours_across_midnight():
    w = Windows.parse(["16:30-00:30", "02:00-03:00"])
    day = datetime(2025, 7, 1, tzinfo=UTC).timestamp()
    assert w.open_at(day + 17 * 3600) and w.open_at(day + 0.25 * 3600) and w.open_at(day + 2.5 * 3600)
    assert not w.open_at(day + 1 * 3600)
    assert w.wait_s(day + 1 * 3600) == 3600  # until 02:00
    assert w.wait_s(day + 3 * 3600) == 13.5 * 3600  # until 16:30
    assert Windows().open_at(day) and Windows().wait_s(day) == 0


@pytest.mark.parametrize(("text", "message"), [
    ("10:00-10:00", "--window '10:00-10:00': it never opens (it ends when it starts)"),
    ("10-12", "--window '10-12': expected HH:MM-HH:MM (UTC), e.g. 16:30-00:30"),
])
def test_a_window_that_never_opens_or_cannot_be_read_is_named(text, message):
    with pytest.raises(UsageError) as caught:
        Windows.parse([text])
    assert str(caught.value) == message


@pytest.mark.parametrize(("changes", "message"), [
    ({"mode": "realtime", "provider": "inline"},
     "--mode realtime: --provider inline has no realtime endpoint (anthropic and openai have one)"),
    ({"finish_by": "1h", "provider": "inline"},
     "--finish-by: --provider inline has no realtime endpoint (anthropic and openai have one)"),
    ({"finish_by": "2020-01-01T00:00Z"}, "--finish-by '2020-01-01T00:00Z': that is in the past"),
    ({"window": ("08:00-08:00",)}, "--window '08:00-08:00': it never opens (it ends when it starts)"),
])
async def test_bad_lane_options_exit_2_naming_the_problem(tmp_path, changes, message):
    (tmp_path / "in.jsonl").write_text("")
    result = await Engine(fast_settings("http://127.0.0.1:9", **changes), str(tmp_path / "out"),
                          [str(tmp_path / "in.jsonl")], quiet=True).run()
    assert (result.exit_code, result.message) == (ExitCode.USAGE, message)
    assert lanes_problem(fast_settings("http://sim"), None, T0) is None
