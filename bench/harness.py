"""`python -m bench`: the scheduler against the floor and two baselines, on one simulator, per input size.
(`python -m bench provider-bound --help`: whether the provider's queue is kept full; bench/provider_bound.py.
`python -m bench tail --help`: the tail, a deadline, prompt caches that hit; bench/tail.py.
`python -m bench profile --help`: where the scheduler's CPU goes, a sorted table and a flame graph; bench/profile.py.)

    python -m bench [--sizes 10000,100000,200000,1000000] [--batch-size 10000] [--concurrency 8]
                    [--poll-min 0.05] [--poll-max 1] [--processing-s 0] [--skip-baselines]
                    [--baseline-max 200000] [--repeat 1] [--out bench/results] [--work bench/work] [--keep]

One simulator process serves every run (zero processing time unless asked, no faults). For each
size N the same cached input goes through, each as its own process measured the same way:
  floor      python -m bench.floor: read + parse + write answers to shards, no network
  scheduler  batch-scheduler run INPUT --out DIR ... (the thing measured)
  sdk        python -m bench.baselines.sdk_obvious (same batch size, concurrency, poll-min)
  article    python -m bench.baselines.article (batches of 5,000, one at a time)
Baselines stop at --baseline-max (the article's one-at-a-time loop is slow on a million).
Throughput is requests / wall time of the whole process, interpreter start included. With
--repeat R each program runs R times per size, in R rounds of one run of each program in turn, and the
run with the median throughput is reported (all R throughputs are kept in the JSON).
Writes OUT/<date>.json (every raw number) and OUT/<date>.png; prints the table and the targets.
Exit status: 0 when every run finished with every request exactly once, 1 otherwise (a missed
target is a finding, not a failure).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from . import measure, metrics, report
from .inputs import ensure_input

ROOT = Path(__file__).resolve().parents[1]
KEY = "sk-bench-simulator"  # the simulator accepts any non-empty key
DEFAULT_SIZES = "10000,100000,200000,1000000"
ARTICLE_BATCH = 5_000
SHARDS = 16
RUN_TIMEOUT_S = 3 * 3600
PROGRAMS = ("scheduler", "floor", "sdk", "article")


@dataclass(frozen=True)
class Options:
    sizes: list[int]
    batch_size: int
    concurrency: int
    poll_min_s: float
    poll_max_s: float
    processing_s: float
    skip_baselines: bool
    baseline_max: int
    repeat: int
    out_dir: str
    work_dir: str
    keep: bool


def parse_args(argv: list[str] | None) -> Options:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default=DEFAULT_SIZES, help=f"comma-separated request counts ({DEFAULT_SIZES})")
    ap.add_argument("--batch-size", type=int, default=10_000)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--poll-min", type=float, default=0.05, help="seconds (scheduler and baselines)")
    ap.add_argument("--poll-max", type=float, default=1.0, help="seconds (scheduler only)")
    ap.add_argument("--processing-s", type=float, default=0.0, help="simulated seconds per batch")
    ap.add_argument("--skip-baselines", action="store_true", help="floor and scheduler only")
    ap.add_argument("--baseline-max", type=int, default=200_000, help="largest N the baselines run on")
    ap.add_argument("--repeat", type=int, default=1, help="runs per program and size; the median is reported")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results"), help="where the JSON and PNG go")
    ap.add_argument("--work", default=str(ROOT / "bench" / "work"), help="inputs cache and run directories")
    ap.add_argument("--keep", action="store_true", help="keep each run's output directory")
    a = ap.parse_args(argv)
    try:
        sizes = [int(s.replace("_", "")) for s in a.sizes.split(",") if s.strip()]
    except ValueError:
        ap.error(f"--sizes: not a list of integers: {a.sizes!r}")
    if not sizes or min(sizes) <= 0:
        ap.error("--sizes: give at least one positive count")
    if a.repeat < 1:
        ap.error("--repeat: at least 1")
    return Options(sorted(set(sizes)), a.batch_size, a.concurrency, a.poll_min, a.poll_max, a.processing_s,
                   a.skip_baselines, a.baseline_max, a.repeat, a.out, a.work, a.keep)


def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def child_env() -> dict[str, str]:
    """Every program's environment: the simulator's key, and bytecode cached as an installed package has it
    (PYTHONDONTWRITEBYTECODE set around us would make each run compile every module again: ~0.2 s a run)."""
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    env["ANTHROPIC_API_KEY"] = KEY
    for name in ("ANTHROPIC_BASE_URL", "CLAUDE_BASE_URL", "CLAUDE_API_KEY"):
        env.pop(name, None)
    return env


def sim_delta(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in after.items():
        if isinstance(v, int | float):
            out[k] = v - before.get(k, 0)
        elif isinstance(v, dict) and k == "calls":
            out[k] = {c: n - before.get(k, {}).get(c, 0) for c, n in v.items() if n - before.get(k, {}).get(c, 0)}
    return out


class Bench:
    def __init__(self, opts: Options, sim: Any):
        self.o = opts
        self.sim = sim
        self.env = child_env()

    # -- one program on one input -------------------------------------------------------------

    def argv(self, program: str, inp: str, out: str) -> list[str]:
        o, py = self.o, sys.executable
        if program == "floor":
            return [py, "-m", "bench.floor", inp, out, "--shards", str(SHARDS)]
        if program == "scheduler":
            return [py, "-m", "batch_scheduler", "run", inp, "--out", out, "--base-url", self.sim.url,
                    "--batch-size", str(o.batch_size), "--concurrency", str(o.concurrency),
                    "--poll-min", str(o.poll_min_s), "--poll-max", str(max(o.poll_max_s, o.poll_min_s)),
                    "--shards", str(SHARDS)]
        if program == "sdk":
            return [py, "-m", "bench.baselines.sdk_obvious", inp, os.path.join(out, "results.jsonl"),
                    "--base-url", self.sim.url, "--api-key", KEY, "--batch-size", str(o.batch_size),
                    "--concurrency", str(o.concurrency), "--poll-min", str(o.poll_min_s)]
        if program == "article":
            return [py, "-m", "bench.baselines.article", inp, os.path.join(out, "results.jsonl"),
                    "--base-url", self.sim.url, "--api-key", KEY, "--batch-size", str(ARTICLE_BATCH),
                    "--poll-min", str(o.poll_min_s)]
        raise ValueError(program)

    def run_one(self, program: str, n: int, inp: str) -> dict[str, Any]:
        run_dir = os.path.join(self.o.work_dir, "runs", f"{n}-{program}")
        shutil.rmtree(run_dir, ignore_errors=True)
        os.makedirs(run_dir)
        out = os.path.join(run_dir, "out")
        if program != "scheduler":
            os.makedirs(out)
        before, sim_cpu = self.sim.stats(), process_cpu_s(self.sim.pid)
        m = measure.run(self.argv(program, inp, out), env=self.env, cwd=run_dir, log_dir=run_dir, name="log",
                        timeout_s=RUN_TIMEOUT_S)
        sim = sim_delta(before, self.sim.stats())
        if sim_cpu is not None and (now := process_cpu_s(self.sim.pid)) is not None:
            sim["cpu_s"] = round(now - sim_cpu, 2)  # the simulator's own CPU seconds during the run
        rec: dict[str, Any] = {
            "ok": m.returncode == 0, "returncode": m.returncode, "wall_s": round(m.wall_s, 3),
            "cpu_s": round(m.cpu_s, 2), "user_s": round(m.user_s, 2), "sys_s": round(m.sys_s, 2),
            "peak_rss_bytes": m.peak_rss_bytes, "measured_by": m.method, "sim": sim,
        }
        if m.returncode != 0:
            rec["error"] = m.tail()
            say(f"bench: {program} on {n:,} exited {m.returncode}:\n{rec['error']}")
            return rec
        try:
            (self.scheduler_numbers if program == "scheduler" else self.other_numbers)(rec, program, out, n)
        except (OSError, ValueError, KeyError) as err:
            rec["ok"] = False
            rec["error"] = f"reading the run's output: {err!r}"
            say(f"bench: {program} on {n:,}: {rec['error']}")
        if not self.o.keep:
            shutil.rmtree(run_dir, ignore_errors=True)
        return rec

    def scheduler_numbers(self, rec: dict[str, Any], program: str, out: str, n: int) -> None:
        with open(os.path.join(out, "summary.json"), "rb") as f:
            summary = orjson.loads(f.read())
        accepted = summary["requests"]["accepted"]
        collected = metrics.ledger_batches(out)
        self.common_numbers(rec, accepted, summary.get("time_to_first_submit_s"), collected)
        rec["ok"] = rec["ok"] and summary.get("exit_code") == 0
        rec["exact"] = metrics.check_exact(sorted(Path(out, "results").glob("shard-*.jsonl")), n).as_dict()
        rec["scheduler_summary"] = {k: summary.get(k) for k in (
            "state", "requests", "results", "batches", "wall_time_s", "throughput_rps", "time_to_first_submit_s",
            "http", "polls")}

    def other_numbers(self, rec: dict[str, Any], program: str, out: str, n: int) -> None:
        if program == "floor":
            with open(os.path.join(out, "bench-summary.json"), "rb") as f:
                s = orjson.loads(f.read())
            rec["requests"] = s["requests"]
            rec["throughput_rps"] = round(s["requests"] / rec["wall_s"], 1)
            rec["exact"] = metrics.check_exact(sorted(Path(out, "results").glob("shard-*.jsonl")), n).as_dict()
            return
        results = os.path.join(out, "results.jsonl")
        with open(results + ".summary.json", "rb") as f:
            s = orjson.loads(f.read())
        written = {b["id"]: b["written_at"] for b in s["batches"]}
        self.common_numbers(rec, s["requests"], s.get("first_submit_s"), written)
        rec["own_poll_retrieves"] = s.get("retrieves")
        rec["exact"] = metrics.check_exact([results], n).as_dict()

    def common_numbers(self, rec: dict[str, Any], requests: int, first_submit_s: float | None,
                       durable_at: dict[str, float]) -> None:
        sim = rec["sim"]
        batches = sim.get("creates", 0)
        polls = sim.get("retrieves", 0) + sim.get("lists", 0)
        rec.update({
            "requests": requests,
            "throughput_rps": round(requests / rec["wall_s"], 1),
            "time_to_first_submit_s": first_submit_s,
            "batches": batches,
            "poll_calls": polls,
            "poll_calls_per_batch": round(polls / batches, 3) if batches else None,
        })
        ended = metrics.provider_ended_at(self.sim.url, KEY, durable_at)
        delays = metrics.delays_s(ended, durable_at)
        rec["delay_s"] = metrics.spread(delays)
        rec["download_s"] = metrics.download_s(self.sim.url, KEY, list(durable_at))

    # -- the whole run ----------------------------------------------------------------------------

    def size(self, n: int) -> dict[str, Any]:
        """Every program on n requests. With --repeat R, R rounds of one run of each program in turn, not R runs
        of one program and then of the next: a slow spell of a shared machine (its speed moves by a third
        within minutes) then touches every program's runs alike, and the ratios between them hold."""
        inp = ensure_input(self.o.work_dir, n, say)
        warm(inp)
        skipped: dict[str, dict[str, str]] = {}
        for program in ("sdk", "article"):
            if self.o.skip_baselines:
                skipped[program] = {"skipped": "skipped (--skip-baselines)"}
            elif n > self.o.baseline_max:
                skipped[program] = {"skipped": "skipped (over --baseline-max)"}
        runs: dict[str, list[dict[str, Any]]] = {program: [] for program in PROGRAMS if program not in skipped}
        for round_no in range(1, self.o.repeat + 1):
            of = f", round {round_no} of {self.o.repeat}" if self.o.repeat > 1 else ""
            for program, done in runs.items():
                say(f"bench: {program} on {n:,} requests{of} ...")
                done.append(rec := self.run_one(program, n, inp))
                if rec.get("throughput_rps"):
                    say(f"bench:   {rec['throughput_rps']:,.0f} req/s, {rec['wall_s']:.2f}s wall, "
                        f"{rec['peak_rss_bytes'] / 2**20:,.0f} MiB peak RSS, {rec['cpu_s']:.1f}s CPU")
        row: dict[str, Any] = {"input_bytes": os.path.getsize(inp)}
        for program in PROGRAMS:
            row[program] = skipped[program] if program in skipped else median_run(runs[program])
        return row


def median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median throughput (a failed run, if any failed), with every run's throughput."""
    failed = [r for r in runs if not r.get("ok") or not r.get("throughput_rps")]
    if failed:
        chosen = failed[0]
    else:
        chosen = sorted(runs, key=lambda r: r["throughput_rps"])[(len(runs) - 1) // 2]
    if len(runs) > 1:
        chosen = {**chosen, "repeats_rps": [r.get("throughput_rps") for r in runs]}
    return chosen


def process_cpu_s(pid: int | None) -> float | None:
    """User + system CPU seconds of a running process (Linux /proc), None when unknown."""
    if pid is None:
        return None
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def warm(path: str) -> None:
    """Read the input once so that every program finds it in the page cache, and compile the code once so
    that no measured run pays for it (`child_env`)."""
    with open(path, "rb", buffering=0) as f:
        while f.read(16 << 20):
            pass
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "batch_scheduler"), str(ROOT / "bench")],
                   env=child_env(), check=False, stdout=subprocess.DEVNULL)


def machine_info() -> dict[str, Any]:
    info: dict[str, Any] = {
        "nproc": os.cpu_count(), "nproc_usable": len(os.sched_getaffinity(0)),
        "python": sys.version.split()[0], "implementation": platform.python_implementation(),
        "platform": platform.platform(), "cpu": None, "mem_total_bytes": None,
    }
    try:
        with open("/proc/cpuinfo") as f:
            info["cpu"] = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), None)
        with open("/proc/meminfo") as f:
            info["mem_total_bytes"] = int(f.readline().split()[1]) * 1024
    except OSError:
        pass
    try:
        info["git_commit"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                            text=True, timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        info["git_commit"] = None
    return info


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["provider-bound"]:  # the queue-bound scenario (bench/provider_bound.py)
        from . import provider_bound
        return provider_bound.main(args[1:])
    if args[:1] == ["tail"]:  # the tail, a deadline, prompt caches (bench/tail.py)
        from . import tail
        return tail.main(args[1:])
    if args[:1] == ["profile"]:  # where the scheduler's CPU goes (bench/profile.py)
        from . import profile
        return profile.main(args[1:])
    o = parse_args(args)
    from batch_scheduler.simulator.process import SimulatorProcess

    if not o.skip_baselines and min(o.sizes) <= o.baseline_max:
        try:
            import anthropic  # noqa: F401
        except ImportError:
            say("bench: the `anthropic` package is missing: pip install -e '.[bench]' (or --skip-baselines)")
            return 2
    started = time.time()
    sim_args = ["--processing-s", repr(o.processing_s), "--seed", "1"]
    data: dict[str, Any] = {
        "date": dt.date.today().isoformat(), "started_at": dt.datetime.now().isoformat(timespec="seconds"),
        "machine": machine_info(), "measured_by": measure.METHOD,
        "options": {"sizes": o.sizes, "batch_size": o.batch_size, "concurrency": o.concurrency,
                    "poll_min_s": o.poll_min_s, "poll_max_s": o.poll_max_s, "processing_s": o.processing_s,
                    "baseline_max": o.baseline_max, "skip_baselines": o.skip_baselines, "repeat": o.repeat,
                    "article_batch_size": ARTICLE_BATCH, "shards": SHARDS},
        "simulator_args": sim_args, "sizes": {},
    }
    say(f"bench: sizes {', '.join(f'{n:,}' for n in o.sizes)}; measured by {measure.METHOD}")
    with SimulatorProcess(sim_args) as sim:
        bench = Bench(o, sim)
        for n in o.sizes:
            data["sizes"][str(n)] = bench.size(n)
    data["wall_s"] = round(time.time() - started, 1)
    data["targets"] = report.targets(data)
    paths = report.write(data, o.out_dir)
    print(report.render(data, paths))
    runs = [r for row in data["sizes"].values() for r in row.values() if isinstance(r, dict) and "skipped" not in r]
    return 0 if all(r.get("ok") and r.get("exact", {}).get("exact") for r in runs) else 1
