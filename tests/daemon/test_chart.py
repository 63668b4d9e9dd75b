"""The status page's chart axes: value ticks at 1-2-5 steps over any range (never an odd value, never two
ticks that print alike), time ticks at whole durations ago."""

from __future__ import annotations

import itertools
import math

import pytest

from batch_scheduler.daemon.chart import ago, count, ticks, time_ticks
from batch_scheduler.daemon.html import money

TOPS = sorted({m * 10.0 ** e for e in range(-4, 10) for m in (1, 1.01, 1.5, 2, 2.5, 3, 3.7, 4.99, 5, 6, 7.5, 9.99)})


def mantissa(step: float) -> float:
    return round(step / 10 ** math.floor(math.log10(step) + 1e-9), 6)


@pytest.mark.parametrize("unit, label", [(1.0, count), (0.01, money)])
@pytest.mark.parametrize("most", [4, 5, 6])
def test_ticks_are_1_2_5_steps_from_zero_past_the_top_and_print_apart(unit, label, most):
    for top in [0.0, *TOPS]:
        got = ticks(top, most=most, unit=unit)
        step = got[1] - got[0]
        assert got[0] == 0 and got[-1] >= top * (1 - 1e-9), (top, got)
        assert mantissa(step) in (1, 2, 5), (top, got)
        assert step >= unit - 1e-12, (top, got)
        assert all(math.isclose(b - a, step, rel_tol=1e-9) for a, b in itertools.pairwise(got)), (top, got)
        assert all(math.isclose(v / step, round(v / step), abs_tol=1e-9) for v in got), (top, got)
        assert len(got) - 1 <= most, (top, got)
        assert len({label(v) for v in got}) == len(got), (top, [label(v) for v in got])
        if top > unit * most:  # not needlessly coarse: the next finer 1-2-5 step would need too many ticks
            finer = step / (2.5 if mantissa(step) == 5 else 2)
            assert math.ceil(top / finer - 1e-9) > most, (top, got)


@pytest.mark.parametrize("top, expected", [
    (3, [0, 1, 2, 3]),
    (7, [0, 2, 4, 6, 8]),
    (100, [0, 20, 40, 60, 80, 100]),
    (101, [0, 50, 100, 150]),
    (1234, [0, 500, 1000, 1500]),
])
def test_a_count_axis_reads_as_a_person_would_draw_it(top, expected):
    assert ticks(top) == expected


def test_a_spend_axis_is_in_whole_cents():
    assert [money(v) for v in ticks(0.036, unit=0.01)] == ["$0.00", "$0.01", "$0.02", "$0.03", "$0.04"]
    assert [money(v) for v in ticks(0.001, unit=0.01)] == ["$0.00", "$0.01"]
    assert [money(v) for v in ticks(2.3, unit=0.01)] == ["$0.00", "$0.50", "$1.00", "$1.50", "$2.00", "$2.50"]


@pytest.mark.parametrize("span_s", [0.5, 5, 59, 60, 61, 300, 3599, 3600, 5400, 6 * 3600, 30 * 3600])
def test_time_ticks_are_whole_durations_ago_and_print_apart(span_s):
    got = time_ticks(span_s)
    labels = [ago(t) for t in got]
    assert got[0] == 0 and labels[0] == "now"
    assert all(t <= span_s for t in got)
    assert len(set(labels)) == len(labels), labels
    assert all(label == "now" or label.split()[0].lstrip("-").isdigit() for label in labels), labels


def test_time_tick_labels():
    assert [ago(t) for t in time_ticks(300)] == ["now", "-1 min", "-2 min", "-3 min", "-4 min", "-5 min"]
    assert [ago(t) for t in time_ticks(6 * 3600)] == ["now", "-1 h", "-2 h", "-3 h", "-4 h", "-5 h", "-6 h"]
    assert [ago(t) for t in time_ticks(5)] == ["now", "-1 s", "-2 s", "-3 s", "-4 s", "-5 s"]
