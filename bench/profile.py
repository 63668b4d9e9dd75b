"""`python -m bench profile`: where the scheduler's CPU goes, for the next person to start from data.

    python -m bench profile [--requests 200000] [--batch-size 10000] [--concurrency 8] [--poll-min 0.05]
                            [--profiler both|cprofile|pyinstrument|none] [--top 60]
                            [--out bench/results/profile] [--work bench/work]

One simulator process (zero processing time, no faults, as `python -m bench`) and the same cached
input; `batch-scheduler run` goes through it as a subprocess, measured the way the bench measures:
  plain         unprofiled: the scheduler's CPU seconds (user + sys, every thread), wall time, peak
                RSS, and the simulator's CPU seconds over the same run
  cprofile      under cProfile timed by the event loop thread's CPU clock (waiting for the network or
                another process costs nothing): OUT/profile-N.pstats and OUT/profile-N.txt, the functions
                sorted by their own time and by cumulative time (the input reader's thread is not in it)
  pyinstrument  under `python -m pyinstrument` when it is installed (the `bench` extra): a flame
                graph to open in a browser, OUT/profile-N.html
Profilers add their own overhead: read their shares, and take CPU seconds from the plain run.
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import os
import pstats
import shutil
import sys
from typing import Any

from . import measure
from .harness import ROOT, SHARDS, child_env, process_cpu_s, say, warm
from .inputs import ensure_input

PROFILERS = ("both", "cprofile", "pyinstrument", "none")


def parse_args(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench profile", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=200_000)
    ap.add_argument("--batch-size", type=int, default=10_000)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--poll-min", type=float, default=0.05, help="seconds")
    ap.add_argument("--profiler", choices=PROFILERS, default="both",
                    help="both: cProfile, and pyinstrument when it is installed")
    ap.add_argument("--top", type=int, default=60, help="rows of each sorted table")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "profile"))
    ap.add_argument("--work", default=str(ROOT / "bench" / "work"))
    a = ap.parse_args(argv)
    if a.requests <= 0:
        ap.error("--requests: a positive count")
    return a


def scheduler_argv(a: argparse.Namespace, url: str, inp: str, out: str) -> list[str]:
    """`batch-scheduler`'s arguments, as `python -m bench` runs it."""
    return ["run", inp, "--out", out, "--base-url", url, "--batch-size", str(a.batch_size),
            "--concurrency", str(a.concurrency), "--poll-min", str(a.poll_min), "--poll-max", "1",
            "--shards", str(SHARDS)]


def profiler_prefix(kind: str, out_file: str) -> list[str]:
    """What comes between the interpreter and the scheduler's arguments."""
    if kind == "cprofile":
        return ["-m", "bench.profile", out_file]  # cProfile on a CPU clock (`child` below)
    if kind == "pyinstrument":
        return ["-m", "pyinstrument", "--renderer", "html", "--outfile", out_file, "-m", "batch_scheduler"]
    return ["-m", "batch_scheduler"]


def profiled_run(a: argparse.Namespace, sim: Any, inp: str, kind: str, out_file: str) -> dict[str, Any]:
    """One scheduler run (under the profiler `kind`, or none): its measures and the simulator's CPU."""
    run_dir = os.path.join(a.work, "runs", f"profile-{a.requests}-{kind}")
    shutil.rmtree(run_dir, ignore_errors=True)
    os.makedirs(run_dir)
    argv = [sys.executable, *profiler_prefix(kind, out_file),
            *scheduler_argv(a, sim.url, inp, os.path.join(run_dir, "out"))]
    sim_before = process_cpu_s(sim.pid)
    m = measure.run(argv, env=child_env(), cwd=run_dir, log_dir=run_dir, name="log")
    sim_after = process_cpu_s(sim.pid)
    rec = {"profiler": kind, "returncode": m.returncode, "wall_s": round(m.wall_s, 2), "cpu_s": round(m.cpu_s, 2),
           "user_s": round(m.user_s, 2), "sys_s": round(m.sys_s, 2), "peak_rss_mib": round(m.peak_rss_bytes / 2**20),
           "sim_cpu_s": round(sim_after - sim_before, 2) if sim_before is not None and sim_after is not None else None}
    if m.returncode != 0:
        rec["error"] = m.tail()
    else:
        shutil.rmtree(run_dir, ignore_errors=True)
    return rec


def table(pstats_file: str, top: int) -> str:
    """The cProfile results as text: by own time, then by cumulative time."""
    out = io.StringIO()
    for key in ("tottime", "cumulative"):
        out.write(f"\n==== sorted by {key} (top {top}) ====\n")
        stats = pstats.Stats(pstats_file, stream=out)
        stats.strip_dirs().sort_stats(key).print_stats(top)
    return out.getvalue()


def line(rec: dict[str, Any]) -> str:
    text = (f"{rec['profiler']:>12}: scheduler CPU {rec['cpu_s']:.2f} s (user {rec['user_s']:.2f}, sys "
            f"{rec['sys_s']:.2f}), wall {rec['wall_s']:.2f} s, peak RSS {rec['peak_rss_mib']} MiB, simulator CPU "
            f"{rec['sim_cpu_s']} s")
    return text if rec["returncode"] == 0 else f"{text}; EXITED {rec['returncode']}:\n{rec.get('error', '')}"


def main(argv: list[str]) -> int:
    a = parse_args(argv)
    from batch_scheduler.simulator.process import SimulatorProcess

    kinds = ["none"]
    if a.profiler in ("both", "cprofile"):
        kinds.append("cprofile")
    if a.profiler in ("both", "pyinstrument"):
        if importlib.util.find_spec("pyinstrument") is not None:
            kinds.append("pyinstrument")
        elif a.profiler == "pyinstrument":
            say("bench profile: pyinstrument is not installed: pip install -e '.[bench]'")
            return 2
    os.makedirs(a.out, exist_ok=True)
    inp = ensure_input(a.work, a.requests, say)
    warm(inp)
    files = {"cprofile": os.path.join(a.out, f"profile-{a.requests}.pstats"),
             "pyinstrument": os.path.join(a.out, f"profile-{a.requests}.html"), "none": ""}
    records = []
    with SimulatorProcess(["--processing-s", "0", "--seed", "1"]) as sim:
        for kind in kinds:
            say(f"bench profile: {a.requests:,} requests, profiler: {kind} ...")
            records.append(rec := profiled_run(a, sim, inp, kind, files[kind]))
            say(line(rec))
    head = [f"# bench profile: {a.requests:,} requests, batch size {a.batch_size:,}, concurrency {a.concurrency}, "
            "cheap simulator", *map(line, records)]
    report = "\n".join(head) + "\n"
    if "cprofile" in kinds and records[kinds.index("cprofile")]["returncode"] == 0:
        report += table(files["cprofile"], a.top)
    path = os.path.join(a.out, f"profile-{a.requests}.txt")
    with open(path, "w") as f:
        f.write(report)
    print("\n".join(head))
    print(f"sorted table: {path}" + (f"; flame graph: {files['pyinstrument']}" if "pyinstrument" in kinds else ""))
    return 0 if all(r["returncode"] == 0 for r in records) else 1


def child(argv: list[str]) -> int:
    """`python -m bench.profile OUT.pstats ARGS...`: `batch-scheduler ARGS...` under cProfile on the thread's CPU
    clock (`python -m cProfile` counts wall time, so a shared machine's waits would swamp the table)."""
    import cProfile
    import time

    from batch_scheduler.commands.main import main as scheduler_main

    profiler = cProfile.Profile(time.thread_time)
    try:
        return profiler.runcall(scheduler_main, argv[1:])
    finally:
        profiler.dump_stats(argv[0])


if __name__ == "__main__":
    sys.exit(child(sys.argv[1:]))
