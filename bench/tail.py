"""`python -m bench tail`: the tail of a job, a deadline, and prompt caches that hit (issue: the tail).

    python -m bench tail [--requests 20000] [--cached-requests 10000] [--batch-s 4] [--batch-size 1000]
                         [--out bench/results] [--work bench/work] [--keep]

Scaled time: a batch takes about --batch-s seconds ("an hour": one round trip), polling scaled to it.
One simulator per scenario, with 3% transient errored answers and 1% expired, the realtime endpoint
answering after 20 ms, and the prompt cache as measured (a write is readable only once its request
completed). Each scenario is `batch-scheduler run` in its own process:
  no-deadline   N requests, by batch only: the makespan and its tail, in round trips (the tail is what
                comes after the first wave: makespan less the first create, less one round trip)
  finish-by     the same with --finish-by 1.75 round trips: ended by the deadline (the job's own wall time,
                from its start as the deadline counts; the makespan adds the interpreter's start)? exactly once? its
                cost against the all-batch price of the same tokens (target <= 1.06x)
  cold-cache    M requests sharing one cached system prompt, --prime-via off: the share of the
                cached-prefix tokens read from the cache (expected about 0%)
  primed        the same with priming (the default, realtime): the share read (target >= 95%)
Writes OUT/<date>-tail.json and prints a table; exit 0 when every run answered every request once.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson

from .harness import ROOT, child_env, machine_info, say

SYSTEM = "You sort support tickets into one of twelve topics and answer with the topic's name only. " * 30
ROUND_TRIPS_TO_DEADLINE = 1.75


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench tail", description=__doc__.splitlines()[0])
    p.add_argument("--requests", type=int, default=20_000)
    p.add_argument("--cached-requests", type=int, default=10_000)
    p.add_argument("--batch-s", type=float, default=4.0, help="seconds a batch takes: one round trip")
    p.add_argument("--batch-size", type=int, default=1000)
    p.add_argument("--out", default=str(ROOT / "bench" / "results"))
    p.add_argument("--work", default=str(ROOT / "bench" / "work"))
    p.add_argument("--keep", action="store_true", help="keep the work directory")
    return p.parse_args(argv)


def write_input(path: str, n: int, *, cached: bool) -> None:
    with open(path, "wb") as f:
        for i in range(n):
            params: dict[str, Any] = {"model": "claude-haiku-4-5", "max_tokens": 32,
                                      "messages": [{"role": "user", "content": f"ticket {i}: my order is late"}]}
            if cached:
                params["system"] = [{"type": "text", "text": SYSTEM, "cache_control": {"type": "ephemeral"}}]
            f.write(orjson.dumps({"custom_id": f"r-{i:07d}", "params": params}) + b"\n")


def exactly_once(out: str, n: int) -> bool:
    seen: set[str] = set()
    lines = 0
    results = Path(out) / "results"
    for shard in results.glob("*.jsonl"):
        for line in shard.read_bytes().splitlines():
            seen.add(orjson.loads(line)["custom_id"])
            lines += 1
    return lines == len(seen) == n


def run_scenario(name: str, o: argparse.Namespace, inp: str, n: int, extra: list[str]) -> dict[str, Any]:
    from batch_scheduler.simulator.process import SimulatorProcess

    out = os.path.join(o.work, name)
    shutil.rmtree(out, ignore_errors=True)
    sim_args = ["--seed", "1", "--processing-s", repr(o.batch_s), "--processing-jitter", "0.1",
                "--errored-rate", "0.03", "--expired-rate", "0.01", "--realtime-latency-s", "0.02",
                "--cache-as-measured"]
    poll = ["--poll-min", repr(o.batch_s / 80), "--poll-max", repr(o.batch_s / 8)]
    with SimulatorProcess(sim_args) as sim:
        argv = [sys.executable, "-m", "batch_scheduler", "run", inp, "--out", out, "--base-url", str(sim.url),
                "--batch-size", str(o.batch_size), "--retry-wait", "0", "--realtime-concurrency", "32",
                "--shards", "8", *poll, *extra]
        say(f"bench tail: {name}: {' '.join(argv[3:])}")
        started = time.monotonic()
        done = subprocess.run(argv, env=child_env(), capture_output=True, text=True, timeout=3600)
        wall_s = time.monotonic() - started
        stats = sim.stats()
    summary = orjson.loads((Path(out) / "summary.json").read_bytes()) if (Path(out) / "summary.json").exists() else {}
    rec = figures(summary, wall_s, o.batch_s)
    rec.update({"exit_code": done.returncode, "exactly_once": exactly_once(out, n), "requests": n,
                "simulator": {k: stats.get(k) for k in ("creates", "requests_created", "realtime_calls", "tokens")}})
    if done.returncode != 0:
        rec["stderr_tail"] = done.stderr[-2000:]
    return rec


def figures(summary: dict[str, Any], wall_s: float, batch_s: float) -> dict[str, Any]:
    first = summary.get("time_to_first_submit_s") or 0.0
    cost = summary.get("cost_usd", 0.0)
    extra = (summary.get("realtime") or {}).get("extra_usd", 0.0)
    cache = summary.get("cache") or {}
    cached = cache.get("read_tokens", 0) + cache.get("write_tokens", 0)
    return {"makespan_s": round(wall_s, 2), "makespan_round_trips": round(wall_s / batch_s, 2),
            "job_wall_s": summary.get("wall_time_s"),  # from the job's start, as --finish-by counts
            "tail_round_trips": round(max(0.0, wall_s - first - batch_s) / batch_s, 2),
            "cost_usd": round(cost, 6), "realtime_requests": (summary.get("realtime") or {}).get("requests", 0),
            "cost_vs_all_batch": round(cost / (cost - extra), 4) if cost > extra else None,
            "cache_read_share": round(cache.get("read_tokens", 0) / cached, 4) if cached else 0.0, "cache": cache}


def render(data: dict[str, Any]) -> str:
    rows = ["| scenario | requests | makespan (round trips) | tail (round trips) | realtime | cost vs all-batch "
            "| cache reads | exactly once |", "|---|---:|---:|---:|---:|---:|---:|---|"]
    for name, r in data["scenarios"].items():
        ratio = f"{r['cost_vs_all_batch']:.3f}x" if r.get("cost_vs_all_batch") else "1.000x"
        rows.append(f"| {name} | {r['requests']:,} | {r['makespan_round_trips']:.2f} | {r['tail_round_trips']:.2f} | "
                    f"{r['realtime_requests']:,} | {ratio} | {100 * r['cache_read_share']:.1f}% | "
                    f"{'yes' if r['exactly_once'] and r['exit_code'] == 0 else 'NO'} |")
    return "\n".join(rows)


def main(argv: list[str]) -> int:
    o = parse_args(argv)
    os.makedirs(o.work, exist_ok=True)
    plain, cached = os.path.join(o.work, "tail-plain.jsonl"), os.path.join(o.work, "tail-cached.jsonl")
    write_input(plain, o.requests, cached=False)
    write_input(cached, o.cached_requests, cached=True)
    deadline_s = ROUND_TRIPS_TO_DEADLINE * o.batch_s
    data: dict[str, Any] = {"date": dt.date.today().isoformat(), "machine": machine_info(),
                            "options": {"requests": o.requests, "cached_requests": o.cached_requests,
                                        "batch_s": o.batch_s, "batch_size": o.batch_size,
                                        "finish_by_s": deadline_s},
                            "scenarios": {}}
    runs = {"no-deadline": (plain, o.requests, []),
            "finish-by": (plain, o.requests, ["--finish-by", f"{deadline_s:g}s"]),
            "cold-cache": (cached, o.cached_requests, ["--prime-via", "off"]),
            "primed": (cached, o.cached_requests, [])}
    for name, (inp, n, extra) in runs.items():
        data["scenarios"][name] = run_scenario(name, o, inp, n, extra)
    fb = data["scenarios"]["finish-by"]
    data["targets"] = {"finish_by_within_deadline": (fb["job_wall_s"] or fb["makespan_s"]) <= deadline_s,
                       "finish_by_cost_at_most_1.06x": (fb["cost_vs_all_batch"] or 1.0) <= 1.06,
                       "primed_reads_at_least_95pct": data["scenarios"]["primed"]["cache_read_share"] >= 0.95}
    os.makedirs(o.out, exist_ok=True)
    path = os.path.join(o.out, f"{data['date']}-tail.json")
    Path(path).write_bytes(orjson.dumps(data, option=orjson.OPT_INDENT_2))
    print(render(data))
    print(f"\ntargets: {data['targets']}\n{path}")
    if not o.keep:
        shutil.rmtree(o.work, ignore_errors=True)
    return 0 if all(r["exactly_once"] and r["exit_code"] == 0 for r in data["scenarios"].values()) else 1
