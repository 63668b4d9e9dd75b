"""`python -m bench provider-bound`: is the provider's queue kept full, with the scheduler's default options?

    python -m bench provider-bound [--requests 800000] [--limits 100000,200000,500000] [--openai-requests 400000]
                                   [--batch-s 8] [--jitter 0.5] [--poll-min 0.05] [--poll-max 1] [--skip-openai]
                                   [--out bench/results] [--work bench/work] [--keep]

Each scenario starts its own simulator (`--processing-s` with `--processing-jitter`: a batch takes
about the same time whatever its size) with a limit on the provider's side, and runs
`batch-scheduler run` with default options but for polling, scaled to the batch time as 60 s is to
batches of about an hour (`--poll-max` an eighth of the batch time):
  anthropic-L   N requests against an organisation queue of L requests (429 at create when full)
  openai        the OpenAI job: its model's enqueued-token limit holds about two default batches
                (50,000 requests each); over it, a batch is accepted and then fails while validating
Reported per scenario: makespan (the run's wall time) against the ideal (N / what the queue holds x
the batch time: it ignores the first upload and the last wave's jitter, so a few percent above 1.0 is
the floor), the peak queued at the simulator against its limit, queue-full answers per minute,
token-limit failures, the scheduler's CPU seconds and peak RSS, and whether every request came back
exactly once. Writes OUT/<date>-provider-bound.json; prints the table and the targets.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import orjson

from . import measure, metrics
from .harness import KEY, ROOT, child_env, machine_info, process_cpu_s, say, warm
from .inputs import ensure_input

OPENAI_BATCH = 50_000  # the scheduler's default batch size for openai
TOKEN_LIMIT_BATCHES = 2.2  # "holds about two batches"
MIB = 1 << 20
TARGET_MAKESPAN = 1.25  # x the ideal
TARGET_QUEUE_FULL_PER_MIN = 1.0
TARGET_TOKEN_FAILURES = 2  # per model per run


def parse_args(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench provider-bound", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=800_000, help="requests of each anthropic scenario")
    ap.add_argument("--limits", default="100000,200000,500000", help="queue limits (requests), comma-separated")
    ap.add_argument("--openai-requests", type=int, default=400_000, help="requests of the openai scenario")
    ap.add_argument("--skip-openai", action="store_true")
    ap.add_argument("--batch-s", type=float, default=8.0, help="seconds a batch takes at the simulator")
    ap.add_argument("--jitter", type=float, default=0.5, help="each batch takes batch-s x (1 +- this)")
    ap.add_argument("--poll-min", type=float, default=0.05)
    ap.add_argument("--poll-max", type=float, default=None, help="default: an eighth of --batch-s")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results"))
    ap.add_argument("--work", default=str(ROOT / "bench" / "work"))
    ap.add_argument("--keep", action="store_true", help="keep each run's output directory")
    ap.add_argument("--scheduler-flag", action="append", default=[], metavar="FLAG",
                    help="an extra flag for `batch-scheduler run` (repeatable; for experiments: the scenario is "
                         "defined with none)")
    a = ap.parse_args(argv)
    a.limits = [int(x.replace("_", "")) for x in a.limits.split(",") if x.strip()]
    a.poll_max = a.poll_max if a.poll_max is not None else a.batch_s / 8
    a.poll_min = min(a.poll_min, a.poll_max)
    return a


def sim_tokens_per_request(path: str, sample: int = 2_000) -> float:
    """Input tokens the simulator counts for a request of the bench input sent through --provider openai
    (its chat-completions form), averaged over the first `sample` lines."""
    from batch_scheduler.core.settings import Settings
    from batch_scheduler.providers.openai.provider import OpenAIProvider
    from batch_scheduler.simulator.counting import json_tokens

    provider = OpenAIProvider(Settings(provider="openai"), None)  # type: ignore[arg-type]  # no calls made
    total = n = 0
    with open(path, "rb") as f:
        for line in f:
            _, converted = provider.check_request(orjson.loads(line), line.rstrip(b"\n"))
            assert converted is not None
            total += max(1, json_tokens(orjson.loads(converted)["body"]["messages"]))
            n += 1
            if n >= sample:
                break
    return total / n


class Scenario:
    def __init__(self, name: str, provider: str, n: int, limit: int, unit: str, holds_requests: float,
                 sim_args: list[str]):
        self.name, self.provider, self.n, self.limit, self.unit = name, provider, n, limit, unit
        self.holds_requests = holds_requests  # requests the provider's queue holds at once
        self.sim_args = sim_args

    def ideal_s(self, batch_s: float) -> float:
        return self.n / self.holds_requests * batch_s


def run_scenario(a: argparse.Namespace, sc: Scenario, inp: str) -> dict[str, Any]:
    from batch_scheduler.simulator.process import SimulatorProcess

    run_dir = os.path.join(a.work, "runs", f"provider-bound-{sc.name}")
    shutil.rmtree(run_dir, ignore_errors=True)
    os.makedirs(run_dir)
    out = os.path.join(run_dir, "out")
    env = child_env()
    if sc.provider == "openai":
        env["OPENAI_API_KEY"] = KEY
    sim_args = ["--processing-s", repr(a.batch_s), "--processing-jitter", repr(a.jitter), "--seed", "1", *sc.sim_args]
    say(f"bench: provider-bound {sc.name}: {sc.n:,} requests, simulator {' '.join(sim_args)}")
    with SimulatorProcess(sim_args) as sim:
        argv = [sys.executable, "-m", "batch_scheduler", "run", inp, "--out", out, "--base-url", sim.url,
                "--poll-min", repr(a.poll_min), "--poll-max", repr(a.poll_max)]
        if sc.provider != "anthropic":
            argv += ["--provider", sc.provider]
        argv += a.scheduler_flag
        load_before, sim_cpu = os.getloadavg(), process_cpu_s(sim.pid)
        m = measure.run(argv, env=env, cwd=run_dir, log_dir=run_dir, name="log", timeout_s=3 * 3600)
        stats = sim.stats()
        sim_cpu_after = process_cpu_s(sim.pid)
    rec: dict[str, Any] = {
        "scenario": sc.name, "provider": sc.provider, "requests": sc.n, "limit": sc.limit, "unit": sc.unit,
        "holds_requests": round(sc.holds_requests), "returncode": m.returncode, "wall_s": round(m.wall_s, 2),
        "ideal_s": round(sc.ideal_s(a.batch_s), 2), "cpu_s": round(m.cpu_s, 1), "peak_rss_bytes": m.peak_rss_bytes,
        "sim_cpu_s": round(sim_cpu_after - sim_cpu, 1) if sim_cpu is not None and sim_cpu_after is not None else None,
        "load_before": [round(x, 2) for x in load_before], "load_after": [round(x, 2) for x in os.getloadavg()],
        "sim": {k: stats.get(k) for k in ("creates", "requests_created", "queue_full", "token_limit_failures",
                                          "peak_queued_requests", "peak_enqueued_tokens", "retrieves", "lists")},
    }
    rec["makespan_x_ideal"] = round(m.wall_s / rec["ideal_s"], 3)
    peak = stats.get("peak_enqueued_tokens") if sc.unit == "tokens" else stats.get("peak_queued_requests")
    rec["peak_queued"] = peak
    rec["peak_x_limit"] = round((peak or 0) / sc.limit, 3)
    rec["queue_full_per_min"] = round((stats.get("queue_full") or 0) / (m.wall_s / 60), 2)
    rec["token_limit_failures"] = stats.get("token_limit_failures") or 0
    try:
        with open(os.path.join(out, "summary.json"), "rb") as f:
            summary = orjson.loads(f.read())
        rec["summary"] = {k: summary.get(k) for k in ("state", "exit_code", "batches", "queue", "attempts")}
        rec["exact"] = metrics.check_exact(sorted(Path(out, "results").glob("shard-*.jsonl")), sc.n).as_dict()
    except (OSError, ValueError) as err:
        rec["error"] = f"reading the run's output: {err!r}"
    if m.returncode != 0:
        rec["error"] = m.tail()
    rec["ok"] = m.returncode == 0 and bool(rec.get("exact", {}).get("exact"))
    say(f"bench:   {m.wall_s:.1f}s ({rec['makespan_x_ideal']:.2f}x ideal {rec['ideal_s']:.1f}s), peak "
        f"{peak:,} of {sc.limit:,} {sc.unit}, {stats.get('queue_full')} queue-full, "
        f"{rec['token_limit_failures']} token-limit failures, {m.peak_rss_bytes / MIB:,.0f} MiB, exit {m.returncode}")
    if not a.keep and rec["ok"]:
        shutil.rmtree(run_dir, ignore_errors=True)
    return rec


def targets(runs: list[dict[str, Any]]) -> list[dict[str, str]]:
    out = []
    for r in runs:
        name = r["scenario"]
        out.append({"target": f"{name}: makespan <= {TARGET_MAKESPAN:g}x ideal",
                    "measured": f"{r['makespan_x_ideal']:.2f}x ({r['wall_s']:.1f}s vs {r['ideal_s']:.1f}s)",
                    "result": "PASS" if r["makespan_x_ideal"] <= TARGET_MAKESPAN else "MISS"})
        out.append({"target": f"{name}: queue-full answers <= {TARGET_QUEUE_FULL_PER_MIN:g} per minute",
                    "measured": f"{r['queue_full_per_min']:.2f}/min ({r['sim']['queue_full']} in {r['wall_s']:.0f}s)",
                    "result": "PASS" if r["queue_full_per_min"] <= TARGET_QUEUE_FULL_PER_MIN else "MISS"})
        if r["unit"] == "tokens":
            out.append({"target": f"{name}: token-limit failures <= {TARGET_TOKEN_FAILURES} per model",
                        "measured": str(r["token_limit_failures"]),
                        "result": "PASS" if r["token_limit_failures"] <= TARGET_TOKEN_FAILURES else "MISS"})
        out.append({"target": f"{name}: every request exactly once, exit 0", "measured":
                    "yes" if r["ok"] else f"NO (exit {r['returncode']})", "result": "PASS" if r["ok"] else "MISS"})
    return out


def table(runs: list[dict[str, Any]]) -> str:
    lines = ["| scenario | requests | limit | makespan s | ideal s | makespan / ideal | peak queued / limit "
             "| queue-full / min | token-limit failures | batches | CPU s (sim) | peak RSS MiB | load | exact |",
             "|" + "---|" * 14]
    for r in runs:
        batches = (r.get("summary") or {}).get("batches") or {}
        lines.append(
            f"| {r['scenario']} | {r['requests']:,} | {r['limit']:,} {r['unit']} | {r['wall_s']:.1f} | "
            f"{r['ideal_s']:.1f} | {r['makespan_x_ideal']:.2f}x | {r['peak_x_limit']:.2f} | "
            f"{r['queue_full_per_min']:.2f} ({r['sim']['queue_full']}) | {r['token_limit_failures']} | "
            f"{batches.get('created', '-')} | {r['cpu_s']:.1f} ({r.get('sim_cpu_s') or '-'}) | "
            f"{r['peak_rss_bytes'] / MIB:,.0f} | {r['load_before'][0]:.1f} | {'yes' if r['ok'] else 'NO'} |")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    a = parse_args(argv)
    started = time.time()
    scenarios: list[tuple[Scenario, str]] = []
    inp = ensure_input(a.work, a.requests, say)
    for limit in a.limits:
        scenarios.append((Scenario(f"anthropic-{limit // 1000}k", "anthropic", a.requests, limit, "requests", limit,
                                   ["--queue-limit", str(limit)]), inp))
    if not a.skip_openai:
        oinp = ensure_input(a.work, a.openai_requests, say)
        per_request = sim_tokens_per_request(oinp)
        limit = round(TOKEN_LIMIT_BATCHES * OPENAI_BATCH * per_request)
        scenarios.append((Scenario("openai", "openai", a.openai_requests, limit, "tokens", limit / per_request,
                                   ["--enqueued-token-limit", str(limit)]), oinp))
    runs = []
    for sc, path in scenarios:
        warm(path)
        runs.append(run_scenario(a, sc, path))
    data = {"date": dt.date.today().isoformat(), "started_at": dt.datetime.now().isoformat(timespec="seconds"),
            "machine": machine_info(), "measured_by": measure.METHOD, "wall_s": round(time.time() - started, 1),
            "options": {"batch_s": a.batch_s, "jitter": a.jitter, "poll_min_s": a.poll_min, "poll_max_s": a.poll_max,
                        "scheduler_flags": ["--poll-min", a.poll_min, "--poll-max", a.poll_max, *a.scheduler_flag]},
            "runs": runs}
    data["targets"] = targets(runs)
    os.makedirs(a.out, exist_ok=True)
    path = os.path.join(a.out, f"{data['date']}-provider-bound.json")
    with open(path, "w") as f:
        json.dump(data, f, indent=2)
    m = data["machine"]
    print(f"## provider-bound bench, {data['date']}\n\n{m['nproc']} CPUs, Python {m['python']}, commit "
          f"{m.get('git_commit')}; batches {a.batch_s:g} s +-{a.jitter * 100:.0f}%, --poll-min {a.poll_min:g} "
          f"--poll-max {a.poll_max:g}, every other option at its default\n")
    print(table(runs))
    print("\n| target | measured | |\n|---|---|---|")
    for t in data["targets"]:
        print(f"| {t['target']} | {t['measured']} | {t['result']} |")
    print(f"\nraw numbers: {path}")
    return 0 if all(r["ok"] for r in runs) else 1
