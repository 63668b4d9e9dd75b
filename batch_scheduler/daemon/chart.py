"""The status page's chart: finished requests (left axis) and spend (right axis) over the last hours, as
an inline SVG, with axes a person reads at a glance.

Value axes are ticked at 1-2-5 steps (`ticks`): 0, then whole multiples of a step that is 1, 2 or 5 times
a power of ten, never finer than the axis' unit (a request, a cent), so no two ticks print alike. The
time axis is ticked at whole durations ago (`time_ticks`: 10 s, 1 min, 15 min, 1 h, ...).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

TIME_STEPS_S = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600)


def ticks(top: float, *, most: int = 5, unit: float = 1.0) -> list[float]:
    """0 and the multiples of a 1-2-5 step (at least `unit`) up to the first at or above `top`, in at most
    `most` intervals."""
    if not top > 0:  # also NaN
        return [0.0, unit]
    step = unit
    power = 10.0 ** math.floor(math.log10(max(unit, top / most)))
    for mantissa in (1, 2, 5, 10):
        step = max(unit, mantissa * power)
        if math.ceil(top / step - 1e-9) <= most:
            break
    n = max(1, math.ceil(top / step - 1e-9))
    return [_clean(i * step) for i in range(n + 1)]


def _clean(value: float) -> float:
    """i x step without the float noise (0.30000000000000004)."""
    return float(f"{value:.12g}")


def time_ticks(span_s: float, *, most: int = 6) -> list[float]:
    """Seconds ago (0 first) at a whole step of TIME_STEPS_S, at most `most` + 1 of them within the span."""
    step = next((s for s in TIME_STEPS_S if span_s / s <= most), TIME_STEPS_S[-1])
    return [float(i * step) for i in range(int(span_s // step) + 1)]


def ago(seconds: float) -> str:
    """A tick of the time axis: "now", "-30 s", "-15 min", "-2 h" (exact for every tick time_ticks gives)."""
    s = round(seconds)
    if s == 0:
        return "now"
    if s % 3600 == 0:
        return f"-{s // 3600} h"
    if s % 60 == 0:
        return f"-{s // 60} min"
    return f"-{s} s"


def count(value: float) -> str:
    return f"{value:,.0f}"


def chart(points: Sequence[tuple[float, int, float]], money: Callable[[float], str], span: str,
          width: int = 1100, height: int = 220) -> str:
    """`points`: (epoch, finished requests, spend) samples; `money` formats the right axis."""
    if len(points) < 2:
        return '<p class="empty">The chart fills in as the daemon runs (a point a minute).</p>'
    left, right, top, bottom = 70, 80, 12, 28
    w, h = width - left - right, height - top - bottom
    t0, t1 = points[0][0], points[-1][0]
    span_s = max(1e-9, t1 - t0)
    n_ticks = ticks(max(p[1] for p in points))
    usd_ticks = ticks(max(p[2] for p in points), unit=0.01)
    max_n, max_usd = n_ticks[-1], usd_ticks[-1]

    def xy(t: float, v: float, vmax: float) -> str:
        return f"{left + w * (t - t0) / span_s:.1f},{top + h * (1 - v / vmax):.1f}"

    done = " ".join(xy(t, n, max_n) for t, n, _ in points)
    usd = " ".join(xy(t, c, max_usd) for t, _, c in points)
    grid = []
    for v in n_ticks:
        y = top + h * (1 - v / max_n)
        grid.append(f'<line x1="{left}" x2="{left + w}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e4e7ec"/>'
                    f'<text class="tick-n" x="{left - 8}" y="{y + 4:.1f}" text-anchor="end">{count(v)}</text>')
    for v in usd_ticks:
        y = top + h * (1 - v / max_usd)
        grid.append(f'<text class="tick-usd" x="{left + w + 8}" y="{y + 4:.1f}">{money(v)}</text>')
    for back in time_ticks(span_s):
        x = left + w * (1 - back / span_s)
        grid.append(f'<text class="tick-t" x="{x:.1f}" y="{height - 8}" text-anchor="middle">{ago(back)}</text>')
    return (f'<svg id="chart" viewBox="0 0 {width} {height}" width="100%" role="img" '
            f'aria-label="finished requests and spend over the last {span}" '
            f'font-size="11" fill="#475467">{"".join(grid)}'
            f'<polyline points="{done}" fill="none" stroke="#2e6fd8" stroke-width="2"/>'
            f'<polyline points="{usd}" fill="none" stroke="#c77700" stroke-width="2" stroke-dasharray="5 3"/></svg>'
            f'<div class="legend"><span><i style="background:#2e6fd8"></i>finished requests (left)</span>'
            f'<span><i style="background:#c77700"></i>spend, USD (right)</span></div>')
