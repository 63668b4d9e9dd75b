"""The bench report: a markdown table, the targets with PASS/MISS, OUT/<date>.json and OUT/<date>.png."""

from __future__ import annotations

import os
from typing import Any

import orjson

MIB = 1 << 20
LABELS = {"scheduler": "scheduler", "floor": "floor (a)", "sdk": "SDK obvious (b)", "article": "article (c)"}
ORDER = ("scheduler", "floor", "sdk", "article")

# the targets (issue 6; the SDK ratio and the floor's CPU ratio as the hot-path issue raised them)
TARGET_RPS = 100_000
TARGET_RPS_AT = 1_000_000
TARGET_VS_SDK = 10.0
TARGET_VS_SDK_AT = 200_000
TARGET_VS_FLOOR = 3.0
TARGET_RSS_BYTES = 200 * MIB
TARGET_RSS_FLAT = 1.3
RSS_FLAT_FROM = 100_000


def _runs(data: dict[str, Any], program: str) -> dict[int, dict[str, Any]]:
    """N -> record of the runs of `program` that produced numbers."""
    out = {}
    for n, row in data["sizes"].items():
        rec = row.get(program)
        if isinstance(rec, dict) and rec.get("ok") and rec.get("throughput_rps"):
            out[int(n)] = rec
    return out


def _at(runs: dict[int, dict[str, Any]], want: int) -> int | None:
    """`want` if measured there, else the largest measured size (None for none)."""
    if want in runs:
        return want
    return max(runs) if runs else None


def _where(n: int, want: int) -> str:
    return f"at {n:,}" if n == want else f"at {n:,} (target stated at {want:,}; not run)"


def _cpu_ratio(top: dict[int, dict[str, Any]], bottom: dict[int, dict[str, Any]], n: int | None) -> float | None:
    """top's CPU seconds over bottom's at N (None where either was not measured)."""
    if n is None or not top[n].get("cpu_s") or not bottom[n].get("cpu_s"):
        return None
    return float(top[n]["cpu_s"]) / float(bottom[n]["cpu_s"])


def targets(data: dict[str, Any]) -> list[dict[str, Any]]:
    sched, floor, sdk = _runs(data, "scheduler"), _runs(data, "floor"), _runs(data, "sdk")
    poll_min = data["options"]["poll_min_s"]
    out: list[dict[str, Any]] = []

    def add(name: str, measured: str, ok: bool | None) -> None:
        out.append({"target": name, "measured": measured, "result": "n/a" if ok is None else "PASS" if ok else "MISS"})

    n = _at(sched, TARGET_RPS_AT)
    add(f">= {TARGET_RPS:,} req/s end to end on {TARGET_RPS_AT:,} requests",
        f"{sched[n]['throughput_rps']:,.0f} req/s {_where(n, TARGET_RPS_AT)}" if n else "no scheduler run",
        sched[n]["throughput_rps"] >= TARGET_RPS if n else None)

    both = {k: v for k, v in sched.items() if k in sdk}
    n = _at(both, TARGET_VS_SDK_AT)
    ratio = sched[n]["throughput_rps"] / sdk[n]["throughput_rps"] if n else None
    add(f">= {TARGET_VS_SDK:g}x the SDK baseline at {TARGET_VS_SDK_AT:,} requests (same batch size, concurrency)",
        f"{ratio:.1f}x {_where(n, TARGET_VS_SDK_AT)}" if n and ratio else "no SDK baseline run",
        ratio >= TARGET_VS_SDK if ratio else None)
    ratio = _cpu_ratio(sdk, sched, n)
    add(f">= {TARGET_VS_SDK:g}x the SDK baseline's CPU seconds at {TARGET_VS_SDK_AT:,} requests",
        f"{ratio:.1f}x {_where(n, TARGET_VS_SDK_AT)} ({sdk[n]['cpu_s']:.2f} / {sched[n]['cpu_s']:.2f} s)"
        if n and ratio else "no SDK baseline run", ratio >= TARGET_VS_SDK if ratio else None)

    both = {k: v for k, v in sched.items() if k in floor}
    n = max(both) if both else None
    ratio = floor[n]["throughput_rps"] / sched[n]["throughput_rps"] if n else None
    worst = max((floor[k]["throughput_rps"] / sched[k]["throughput_rps"], k) for k in both) if both else None
    add(f"within {TARGET_VS_FLOOR:g}x of the floor (floor req/s / scheduler req/s, largest N)",
        f"{ratio:.2f}x at {n:,}; worst {worst[0]:.2f}x at {worst[1]:,}" if n and ratio and worst else "no runs",
        ratio <= TARGET_VS_FLOOR if ratio else None)
    ratio = _cpu_ratio(sched, floor, n)
    add(f"scheduler CPU seconds within {TARGET_VS_FLOOR:g}x of the floor's (largest N)",
        f"{ratio:.2f}x at {n:,} ({sched[n]['cpu_s']:.2f} / {floor[n]['cpu_s']:.2f} s)" if n and ratio else "no runs",
        ratio <= TARGET_VS_FLOOR if ratio else None)

    if sched:
        peak_n = max(sched, key=lambda k: sched[k]["peak_rss_bytes"])
        peak = sched[peak_n]["peak_rss_bytes"]
        add(f"peak RSS under {TARGET_RSS_BYTES // MIB} MiB (every N)", f"{peak / MIB:,.0f} MiB at {peak_n:,}",
            peak < TARGET_RSS_BYTES)
    else:
        add(f"peak RSS under {TARGET_RSS_BYTES // MIB} MiB (every N)", "no scheduler run", None)

    big = max(sched) if sched else None
    if big and RSS_FLAT_FROM in sched and big > RSS_FLAT_FROM:
        flat = sched[big]["peak_rss_bytes"] / sched[RSS_FLAT_FROM]["peak_rss_bytes"]
        add(f"peak RSS flat from {RSS_FLAT_FROM:,} to {TARGET_RPS_AT:,} (within {TARGET_RSS_FLAT:g}x)",
            f"{flat:.2f}x ({sched[RSS_FLAT_FROM]['peak_rss_bytes'] / MIB:,.0f} -> "
            f"{sched[big]['peak_rss_bytes'] / MIB:,.0f} MiB, {RSS_FLAT_FROM:,} -> {big:,})", flat <= TARGET_RSS_FLAT)
    else:
        add(f"peak RSS flat from {RSS_FLAT_FROM:,} to {TARGET_RPS_AT:,} (within {TARGET_RSS_FLAT:g}x)",
            f"needs {RSS_FLAT_FROM:,} and a larger N", None)

    worst_delay: tuple[float, float, int] | None = None  # (p95 - bound, p95, N)
    bounds = []
    for k, rec in sorted(sched.items()):
        p95, dl = rec.get("delay_s", {}).get("p95"), rec.get("download_s")
        if p95 is None or dl is None:
            continue
        bound = poll_min + dl
        bounds.append(f"{k:,}: {p95:.3f}s vs {bound:.3f}s")
        if worst_delay is None or p95 - bound > worst_delay[0]:
            worst_delay = (p95 - bound, p95, k)
    add("batch ended -> results durable, p95 under poll-min + download time (every N)",
        "; ".join(bounds) or "no delays measured", worst_delay[0] < 0 if worst_delay else None)

    parts, ok = [], None
    for k, rec in sorted(sched.items()):
        s = f"{k:,}: {rec.get('poll_calls_per_batch')}"
        if k in sdk and sdk[k].get("poll_calls_per_batch") is not None and rec.get("poll_calls_per_batch") is not None:
            s += f" (SDK {sdk[k]['poll_calls_per_batch']})"
            ok = (ok is not False) and rec["poll_calls_per_batch"] <= sdk[k]["poll_calls_per_batch"]
        parts.append(s)
    add("poll calls per batch (retrieve + list at the simulator), no more than the SDK baseline's",
        "; ".join(parts) or "no scheduler run", ok)
    return out


# -- rendering ----------------------------------------------------------------------------------------


def _f(x: Any, fmt: str, missing: str = "-") -> str:
    return missing if x is None else format(x, fmt)


def _exact(rec: dict[str, Any]) -> str:
    e = rec.get("exact")
    if not e:
        return "-"
    if e["exact"]:
        return "yes"
    return f"NO ({e['duplicates']} dup, {e['missing']} missing, {e['foreign']} foreign, {e['lines']:,} lines)"


def table(data: dict[str, Any]) -> str:
    head = ("| N | program | req/s | scheduler / this | wall s | first submit s | delay p50 / p95 / p99 s "
            "| polls / batch | peak RSS MiB | CPU s | sim CPU s | exact |")
    lines = [head, "|" + "---|" * 12]
    for n, row in sorted(data["sizes"].items(), key=lambda kv: int(kv[0])):
        sched = row.get("scheduler", {})
        s_rps = sched.get("throughput_rps") if sched.get("ok") else None
        for program in ORDER:
            rec = row.get(program)
            if rec is None:
                continue
            label = LABELS[program]
            if "skipped" in rec:
                lines.append(f"| {int(n):,} | {label} | {rec['skipped']} |" + " |" * 9)
                continue
            if not rec.get("throughput_rps"):
                lines.append(f"| {int(n):,} | {label} | FAILED (exit {rec.get('returncode')}) |" + " |" * 9)
                continue
            rps = rec["throughput_rps"]
            ratio = f"{s_rps / rps:.2f}x" if s_rps else "-"
            d = rec.get("delay_s") or {}
            delay = " / ".join(_f(d.get(k), ".3f") for k in ("p50", "p95", "p99")) if d.get("n") else "-"
            lines.append(
                f"| {int(n):,} | {label} | {rps:,.0f} | {ratio} | {rec['wall_s']:.2f} | "
                f"{_f(rec.get('time_to_first_submit_s'), '.3f')} | {delay} | {_f(rec.get('poll_calls_per_batch'), '.2f')} | "
                f"{rec['peak_rss_bytes'] / MIB:,.0f} | {rec['cpu_s']:.1f} | {_f(rec['sim'].get('cpu_s'), '.1f')} | "
                f"{_exact(rec)} |")
    return "\n".join(lines)


def render(data: dict[str, Any], paths: dict[str, str | None]) -> str:
    m, o = data["machine"], data["options"]
    out = [
        f"## batch-scheduler bench, {data['date']}",
        "",
        f"{m['nproc']} CPUs ({m.get('cpu') or 'unknown CPU'}), Python {m['python']}, commit {m.get('git_commit')}; "
        f"batch size {o['batch_size']:,} (article: {o['article_batch_size']:,}), concurrency {o['concurrency']}, "
        f"poll-min {o['poll_min_s']:g}s, poll-max {o['poll_max_s']:g}s, simulated processing {o['processing_s']:g}s; "
        f"peak RSS and CPU by {data['measured_by']}"
        + (f"; each row is the median of {o['repeat']} runs." if o.get("repeat", 1) > 1 else "."),
        "req/s = requests / wall time of the whole process (interpreter start included). Delay = provider's "
        "ended_at -> results durable (scheduler: ledger collected_at; baselines: results written). "
        "Polls = retrieve + list calls the simulator saw, per batch created (the SDK's results() retrieves "
        "once more itself).",
        "",
        table(data),
        "",
        "### targets",
        "",
        "| target | measured | |",
        "|---|---|---|",
        *[f"| {t['target']} | {t['measured']} | {t['result']} |" for t in data["targets"]],
        "",
        f"raw numbers: {paths.get('json')}" + (f"; chart: {paths['png']}" if paths.get("png") else
                                                "; chart: not drawn (matplotlib missing)"),
    ]
    return "\n".join(out)


def write(data: dict[str, Any], out_dir: str) -> dict[str, str | None]:
    os.makedirs(out_dir, exist_ok=True)
    base = os.path.join(out_dir, data["date"])
    with open(base + ".json", "wb") as f:
        f.write(orjson.dumps(data, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS) + b"\n")
    return {"json": base + ".json", "png": chart(data, base + ".png")}


def chart(data: dict[str, Any], path: str) -> str | None:
    try:
        import matplotlib
    except ImportError:
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    for program in ORDER:
        runs = _runs(data, program)
        if not runs:
            continue
        ns = sorted(runs)
        ax1.plot(ns, [runs[n]["throughput_rps"] for n in ns], marker="o", label=LABELS[program])
        ax2.plot(ns, [runs[n]["peak_rss_bytes"] / MIB for n in ns], marker="o", label=LABELS[program])
    ax1.axhline(TARGET_RPS, color="grey", linestyle=":", linewidth=1, label=f"target {TARGET_RPS:,} req/s")
    ax2.axhline(TARGET_RSS_BYTES / MIB, color="grey", linestyle=":", linewidth=1, label="target 200 MiB")
    for ax, title, unit in ((ax1, "throughput", "requests / s (end to end)"), (ax2, "peak RSS", "MiB")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("requests (N)")
        ax.set_ylabel(unit)
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    m = data["machine"]
    fig.suptitle(f"batch-scheduler bench {data['date']} ({m['nproc']} CPUs, Python {m['python']})", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
