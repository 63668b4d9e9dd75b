"""The status page's HTML, rendered on the server: no script, no build step, nothing fetched from outside.

`overview` is the page at `/` (every job as a row, and a chart of the last hours); `job_page` is
`/job/NAME` (one job and its batches). Both take plain dicts (daemon.page builds them) and escape
every string that came from a job. Each job row carries `data-job`, `data-state`, `data-final` and
`data-total`, so a script (or a test in a browser) can read the figures the bar shows.
"""

from __future__ import annotations

import html
import time
import urllib.parse
from collections.abc import Mapping, Sequence
from typing import Any

REFRESH_S = 10

STYLE = """
:root { --fg:#1d2430; --muted:#667085; --line:#e4e7ec; --bg:#f7f8fa; --ok:#12a150; --run:#2e6fd8;
        --warn:#c77700; --bad:#d0372c; --idle:#8a94a6; }
* { box-sizing: border-box; }
body { margin:0; font:14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color:var(--fg);
       background:var(--bg); }
header { padding:14px 24px; background:#fff; border-bottom:1px solid var(--line); display:flex; gap:24px;
         align-items:baseline; }
header h1 { font-size:18px; margin:0; }
header .meta { color:var(--muted); }
main { padding:18px 24px; }
section { background:#fff; border:1px solid var(--line); border-radius:8px; padding:14px 16px; margin-bottom:18px; }
h2 { font-size:15px; margin:0 0 10px; }
table { width:100%; border-collapse:collapse; }
th { text-align:left; font-weight:600; color:var(--muted); font-size:12px; padding:6px 8px;
     border-bottom:1px solid var(--line); }
td.name { white-space:nowrap; font-weight:600; }
td { padding:8px; border-bottom:1px solid var(--line); vertical-align:middle; }
tr:last-child td { border-bottom:none; }
td.num { text-align:right; font-variant-numeric:tabular-nums; white-space:nowrap; }
a { color:var(--run); text-decoration:none; } a:hover { text-decoration:underline; }
.state { display:inline-block; padding:1px 8px; border-radius:10px; font-size:12px; font-weight:600; color:#fff; }
.state.done { background:var(--ok); } .state.running { background:var(--run); } .state.queued { background:var(--idle); }
.state.paused { background:var(--warn); } .state.failed { background:var(--bad); } .state.cancelled { background:#555; }
.bar { position:relative; height:16px; min-width:180px; background:#eef1f5; border-radius:8px; overflow:hidden; }
.bar > span { position:absolute; inset:0 auto 0 0; background:var(--run); }
.done .bar > span { background:var(--ok); } .failed .bar > span { background:var(--bad); }
.bar > em { position:absolute; inset:0; text-align:center; font-size:11px; font-style:normal; line-height:16px;
            text-shadow:0 0 3px #fff, 0 0 2px #fff; }
.over { color:var(--bad); font-weight:600; }
.problem { color:var(--muted); max-width:380px; }
.problem.some { color:var(--bad); }
.legend span { margin-right:16px; } .legend i { display:inline-block; width:12px; height:3px; margin-right:5px;
  vertical-align:middle; }
.empty { color:var(--muted); padding:8px; }
dl { display:grid; grid-template-columns:max-content 1fr; gap:4px 18px; margin:0; }
dt { color:var(--muted); } dd { margin:0; } dd .bar { max-width:480px; }
"""


def esc(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    s = max(0.0, seconds)
    if s < 90:
        return f"{s:.0f} s"
    if s < 90 * 60:
        return f"{s / 60:.0f} min"
    if s < 48 * 3600:
        return f"{s / 3600:.1f} h"
    return f"{s / 86400:.1f} d"


def money(usd: float | None) -> str:
    if usd is None:
        return "—"
    return f"${usd:,.2f}" if usd >= 100 else f"${usd:,.4f}"


def spend(spent: float, cap: float | None) -> str:
    if cap is None:
        return money(spent)
    cls = ' class="over"' if spent > cap else ""
    return f"<span{cls}>{money(spent)}</span> of {money(cap)}"


def bar(final: int, total: int | None, estimated: bool = False) -> str:
    """final / total; an estimated total (the input is still being read) is shown as "about"."""
    pct = min(100.0, 100.0 * final / total) if total else 0.0
    about = "about " if estimated else ""
    label = f"{final:,} / {about}{total:,} ({pct:.0f}%)" if total else f"{final:,} / counting…"
    return (f'<div class="bar" role="progressbar" aria-valuenow="{final}" aria-valuemax="{total or 0}">'
            f'<span style="width:{pct:.1f}%"></span><em>{label}</em></div>')


def _page(title: str, subtitle: str, body: str) -> str:
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8">'
            f'<meta http-equiv="refresh" content="{REFRESH_S}"><meta name="viewport" content="width=device-width">'
            f"<title>{esc(title)}</title><style>{STYLE}</style></head><body>"
            f'<header><h1>{esc(title)}</h1><span class="meta">{subtitle}</span></header><main>{body}</main>'
            f"</body></html>")


def job_row(j: Mapping[str, Any]) -> str:
    name, st = j["name"], j["state"]
    problem = j.get("problem")
    return (f'<tr class="job {esc(st)}" data-job="{esc(name)}" data-state="{esc(st)}" data-final="{j["final"]}" '
            f'data-total="{j["total"] if j["total"] is not None else ""}" '
            f'data-estimated="{"true" if j.get("estimated") else "false"}">'
            f'<td class="name"><a href="/job/{esc(urllib.parse.quote(name, safe=""))}">{esc(name)}</a></td>'
            f'<td><span class="state {esc(st)}">{esc(st)}</span></td>'
            f'<td>{bar(j["final"], j["total"], j.get("estimated", False))}</td>'
            f'<td class="num">{j["batches_in_flight"]:,}</td><td class="num">{j["requests_in_flight"]:,}</td>'
            f'<td class="num">{spend(j["spend_usd"], j["max_cost_usd"])}</td>'
            f'<td class="num">{duration(j["eta_s"]) if j["eta_s"] is not None else "—"}</td>'
            f'<td class="problem{" some" if problem else ""}">{esc(problem) if problem else "—"}</td></tr>')


def jobs_table(jobs: Sequence[Mapping[str, Any]]) -> str:
    if not jobs:
        return '<p class="empty">No jobs yet: drop NAME.jsonl into the spool\'s inbox/.</p>'
    head = ("<tr><th>job</th><th>state</th><th>finished / total</th><th>batches in flight</th>"
            "<th>requests in flight</th><th>spend vs --max-cost</th><th>ETA</th><th>last problem</th></tr>")
    return f'<table id="jobs"><thead>{head}</thead><tbody>{"".join(job_row(j) for j in jobs)}</tbody></table>'


def chart(points: Sequence[tuple[float, int, float]], width: int = 1100, height: int = 220) -> str:
    """Finished requests (left axis) and spend (right axis) over time, as an inline SVG."""
    if len(points) < 2:
        return '<p class="empty">The chart fills in as the daemon runs (a point a minute).</p>'
    left, right, top, bottom = 70, 80, 12, 28
    w, h = width - left - right, height - top - bottom
    t0, t1 = points[0][0], points[-1][0]
    span = max(1e-9, t1 - t0)
    max_n = max(1, max(p[1] for p in points))
    max_usd = max(1e-9, max(p[2] for p in points))

    def xy(t: float, v: float, vmax: float) -> str:
        return f"{left + w * (t - t0) / span:.1f},{top + h * (1 - v / vmax):.1f}"

    done = " ".join(xy(t, n, max_n) for t, n, _ in points)
    usd = " ".join(xy(t, c, max_usd) for t, _, c in points)
    grid = []
    for i in range(5):
        y = top + h * i / 4
        grid.append(f'<line x1="{left}" x2="{left + w}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e4e7ec"/>'
                    f'<text x="{left - 8}" y="{y + 4:.1f}" text-anchor="end">{max_n * (1 - i / 4):,.0f}</text>'
                    f'<text x="{left + w + 8}" y="{y + 4:.1f}">{money(max_usd * (1 - i / 4))}</text>')
    for i in range(5):
        x = left + w * i / 4
        ago = span * (1 - i / 4)
        label = "now" if i == 4 else f"-{duration(ago)}"
        grid.append(f'<text x="{x:.1f}" y="{height - 8}" text-anchor="middle">{label}</text>')
    return (f'<svg id="chart" viewBox="0 0 {width} {height}" width="100%" role="img" '
            f'aria-label="finished requests and spend over the last {duration(span)}" '
            f'font-size="11" fill="#667085">{"".join(grid)}'
            f'<polyline points="{done}" fill="none" stroke="#2e6fd8" stroke-width="2"/>'
            f'<polyline points="{usd}" fill="none" stroke="#c77700" stroke-width="2" stroke-dasharray="5 3"/></svg>'
            f'<div class="legend"><span><i style="background:#2e6fd8"></i>finished requests (left)</span>'
            f'<span><i style="background:#c77700"></i>spend, USD (right)</span></div>')


def overview(jobs: Sequence[Mapping[str, Any]], totals: Mapping[str, Any],
             points: Sequence[tuple[float, int, float]]) -> str:
    counts = ", ".join(f"{n} {s}" for s, n in totals["by_state"].items() if n) or "no jobs"
    subtitle = (f"{esc(counts)} · {totals['slots_in_use']} of {totals['slots_capacity']} batch slots in use · "
                f"up {duration(totals['uptime_s'])} · refreshed {time.strftime('%H:%M:%S')}")
    span = duration(points[-1][0] - points[0][0]) if len(points) >= 2 else "—"
    body = (f"<section><h2>Jobs</h2>{jobs_table(jobs)}</section>"
            f"<section><h2>Finished requests and spend, last {span}</h2>{chart(points)}</section>")
    return _page("batch-scheduler daemon", subtitle, body)


def batches_table(batches: Sequence[Mapping[str, Any]], older: int) -> str:
    if not batches:
        return '<p class="empty">No batch sent yet.</p>'
    head = ("<tr><th>chunk</th><th>batch</th><th>kind</th><th>requests</th><th>attempt</th><th>state</th>"
            "<th>age</th><th>took</th><th>note</th></tr>")
    rows = "".join(
        f'<tr class="batch" data-state="{esc(b["state"])}"><td class="num">{b["chunk"]}</td>'
        f'<td>{esc(b["batch_id"] or "—")}</td><td>{esc(b["kind"])}</td><td class="num">{b["requests"]:,}</td>'
        f'<td class="num">{b["attempt"]}</td><td>{esc(b["state"])}</td><td class="num">{duration(b["age_s"])}</td>'
        f'<td class="num">{duration(b["took_s"])}</td><td class="problem">{esc(b["note"] or "")}</td></tr>'
        for b in batches)
    more = f'<p class="empty">{older:,} older batch(es) not shown.</p>' if older else ""
    return f'<table id="batches"><thead>{head}</thead><tbody>{rows}</tbody></table>{more}'


def job_page(j: Mapping[str, Any], batches: Sequence[Mapping[str, Any]], older: int) -> str:
    facts = [("state", f'<span class="state {esc(j["state"])}">{esc(j["state"])}</span>'),
             ("progress", bar(j["final"], j["total"], j.get("estimated", False))),
             ("batches / requests in flight", f'{j["batches_in_flight"]:,} / {j["requests_in_flight"]:,}'),
             ("spend vs --max-cost", spend(j["spend_usd"], j["max_cost_usd"])),
             ("ETA", duration(j["eta_s"])), ("rejected lines", f'{j["rejected"]:,}'),
             ("waiting for another attempt", f'{j["waiting_retry"]:,}'),
             ("results", esc(", ".join(f"{n:,} {k}" for k, n in (j.get("results") or {}).items() if n) or "—")),
             ("last problem", esc(j.get("problem") or "—")), ("arrived as", esc(j.get("source")))]
    dl = "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in facts)
    body = (f'<section class="job {esc(j["state"])}" data-job="{esc(j["name"])}" data-state="{esc(j["state"])}" '
            f'data-final="{j["final"]}" data-total="{j["total"] if j["total"] is not None else ""}">'
            f'<h2><a href="/">all jobs</a> / {esc(j["name"])}</h2><dl>{dl}</dl></section>'
            f"<section><h2>Batches</h2>{batches_table(batches, older)}</section>")
    return _page(f"job {j['name']}", "batch-scheduler daemon", body)


def job_missing(name: str) -> str:
    return _page("no such job", "batch-scheduler daemon",
                 f'<section><h2><a href="/">all jobs</a></h2><p class="empty">No job {esc(name)!s} in the spool.</p>'
                 f"</section>")
