"""The status page's HTML, rendered on the server: no script, no build step, nothing fetched from outside.

`overview` is the page at `/` (every job as a row, a totals row, and a chart of the last hours: daemon.chart);
`job_page` is `/job/NAME` (one job and its batches). Both take plain dicts (daemon.page builds them) and
escape every string that came from a job. Each job row carries `data-job`, `data-state`, `data-final` and
`data-total`, so a script (or a test in a browser) can read the figures the bar shows. A bar's label is
beside its fill, never over it; money is shown in dollars and cents.
"""

from __future__ import annotations

import html
import time
import urllib.parse
from collections.abc import Mapping, Sequence
from typing import Any

from batch_scheduler.daemon.chart import chart

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
.progress { min-width:200px; }
.bar { position:relative; height:8px; background:#e4e7ec; border-radius:4px; overflow:hidden; }
.bar > span { position:absolute; inset:0 auto 0 0; background:var(--run); }
.done .bar > span { background:var(--ok); } .failed .bar > span { background:var(--bad); }
.paused .bar > span { background:var(--warn); }
.progress > em { display:block; margin-top:3px; font-size:12px; font-style:normal; color:var(--fg);
                 font-variant-numeric:tabular-nums; }
.tail { display:block; font-size:12px; color:var(--warn); }
.sub { display:block; font-size:12px; font-weight:400; color:var(--muted); }
.saving { color:var(--ok); }
.next { min-width:280px; max-width:380px; font-size:13px; color:var(--fg); }
code { font:12px ui-monospace, SFMono-Regular, Menlo, monospace; background:#f2f4f7; padding:1px 4px;
       border-radius:4px; overflow-wrap:anywhere; }
tfoot td { font-weight:600; border-top:2px solid var(--line); border-bottom:none; }
.over { color:var(--bad); font-weight:600; }
.problem { color:var(--muted); max-width:320px; font-size:13px; }
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
    """Dollars and cents; a spend under half a cent is "<$0.01", never "$0.00" (HTML)."""
    if usd is None:
        return "—"
    return "&lt;$0.01" if 0 < usd < 0.005 else f"${usd:,.2f}"


def spend(spent: float, cap: float | None) -> str:
    if cap is None:
        return money(spent)
    cls = ' class="over"' if spent > cap else ""
    return f"<span{cls}>{money(spent)}</span> of {money(cap)}"


def saving(j: Mapping[str, Any]) -> str:
    """What the batch price saved against the standard price of the same tokens."""
    if not j.get("standard_usd"):
        return ""
    return (f'<span class="sub"><span class="saving">saved {money(j["saving_usd"])}</span> '
            f'of {money(j["standard_usd"])} at standard prices</span>')


def bar(final: int, total: int | None, estimated: bool = False, started: bool = True) -> str:
    """final / total, the label under the fill; an estimated total (the input is still being read) is
    "about"; a job that never started (no ledger) says so rather than counting."""
    pct = min(100.0, 100.0 * final / total) if total else 0.0
    about = "about " if estimated else ""
    if total:
        label = f"{final:,} / {about}{total:,} ({pct:.0f}%)"
    else:
        label = f"{final:,} / counting…" if started else "not started"
    return (f'<div class="progress"><div class="bar" role="progressbar" aria-valuenow="{final}" '
            f'aria-valuemax="{total or 0}"><span style="width:{pct:.1f}%"></span></div><em>{label}</em></div>')


def retry_tail(tail: Mapping[str, Any] | None) -> str:
    """"37 wait for attempt 3, next at 14:02:31": the requests parked for another attempt."""
    if not tail:
        return ""
    when = ("due now" if tail["next_at"] is None or tail["next_at"] <= time.time()
            else f"next at {time.strftime('%H:%M:%S', time.localtime(tail['next_at']))}")
    attempt = f"attempt {tail['attempt']}" if tail.get("attempt") else "another attempt"
    return f'<span class="tail">{tail["waiting"]:,} wait for {attempt}, {when}</span>'


def runs_on(j: Mapping[str, Any]) -> str:
    """"anthropic · claude-sonnet-4-5": the job's provider and the models its requests name."""
    if not j.get("provider") and not j.get("models"):
        return "—"
    models = ", ".join(j.get("models") or []) or "model not known yet"
    return f'{esc(j.get("provider") or "—")} · {esc(models)}'


def next_step(j: Mapping[str, Any]) -> str:
    text, command = j.get("advice") or "", j.get("command")
    code = f"<code>{esc(command)}</code>" if command else ""
    return f'{esc(text)}{" " if text and code else ""}{code}' or "—"


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
            f'<td class="name"><a href="/job/{esc(urllib.parse.quote(name, safe=""))}">{esc(name)}</a>'
            f'<span class="sub runs-on">{runs_on(j)}</span></td>'
            f'<td><span class="state {esc(st)}">{esc(st)}</span></td>'
            f'<td>{bar(j["final"], j["total"], j.get("estimated", False), j.get("started", True))}'
            f'{retry_tail(j.get("retry_tail"))}</td>'
            f'<td class="num">{j["batches_in_flight"]:,}</td><td class="num">{j["requests_in_flight"]:,}</td>'
            f'<td class="num">{spend(j["spend_usd"], j["max_cost_usd"])}{saving(j)}</td>'
            f'<td class="num">{duration(j["eta_s"]) if j["eta_s"] is not None else "—"}</td>'
            f'<td class="problem{" some" if problem else ""}">{esc(problem) if problem else "—"}</td>'
            f'<td class="next">{next_step(j)}</td></tr>')


def totals_row(t: Mapping[str, Any]) -> str:
    """All jobs: finished of their totals, in flight, spend and what the batch price saved."""
    total = f' / {t["total"]:,}' if t["total"] else ""
    return (f'<tr id="totals"><td class="name">all jobs</td><td></td>'
            f'<td class="num">{t["final"]:,}{total}</td><td class="num">{t["batches_in_flight"]:,}</td>'
            f'<td class="num">{t["requests_in_flight"]:,}</td>'
            f'<td class="num">{money(t["spend_usd"])}{saving(t)}</td><td></td><td></td><td></td></tr>')


def jobs_table(jobs: Sequence[Mapping[str, Any]], totals: Mapping[str, Any] | None = None) -> str:
    if not jobs:
        return '<p class="empty">No jobs yet: drop NAME.jsonl into the spool\'s inbox/.</p>'
    head = ("<tr><th>job<span class=\"sub\">provider · model</span></th><th>state</th><th>finished / total</th>"
            "<th>batches in flight</th><th>requests in flight</th><th>spend vs --max-cost</th><th>ETA</th>"
            "<th>last problem</th><th>next step</th></tr>")
    foot = f"<tfoot>{totals_row(totals)}</tfoot>" if totals else ""
    return (f'<table id="jobs"><thead>{head}</thead><tbody>{"".join(job_row(j) for j in jobs)}</tbody>'
            f"{foot}</table>")


def overview(jobs: Sequence[Mapping[str, Any]], totals: Mapping[str, Any],
             points: Sequence[tuple[float, int, float]]) -> str:
    counts = ", ".join(f"{n} {s}" for s, n in totals["by_state"].items() if n) or "no jobs"
    subtitle = (f"{esc(counts)} · {totals['slots_in_use']} of {totals['slots_capacity']} batch slots in use · "
                f"up {duration(totals['uptime_s'])} · refreshed {time.strftime('%H:%M:%S')}")
    span = duration(points[-1][0] - points[0][0]) if len(points) >= 2 else "—"
    body = (f"<section><h2>Jobs</h2>{jobs_table(jobs, totals.get('jobs'))}</section>"
            f"<section><h2>Finished requests and spend, last {span}</h2>{chart(points, money, span)}</section>")
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
             ("provider / model", runs_on(j)),
             ("progress", bar(j["final"], j["total"], j.get("estimated", False), j.get("started", True))),
             ("batches / requests in flight", f'{j["batches_in_flight"]:,} / {j["requests_in_flight"]:,}'),
             ("spend vs --max-cost", spend(j["spend_usd"], j["max_cost_usd"]) + saving(j)),
             ("ETA", duration(j["eta_s"])), ("rejected lines", f'{j["rejected"]:,}'),
             ("waiting for another attempt", f'{j["waiting_retry"]:,}{retry_tail(j.get("retry_tail"))}'),
             ("results", esc(", ".join(f"{n:,} {k}" for k, n in (j.get("results") or {}).items() if n) or "—")),
             ("last problem", esc(j.get("problem") or "—")), ("next step", next_step(j)),
             ("arrived as", esc(j.get("source")))]
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
