"""Tables in and out at scale: peak RSS of DataFrame input and of to_pandas / to_polars / export.

    python -m bench.frames [N] [--only to_pandas,to_polars] [--repeat R]
                                        (default 1,000,000 rows; bench/work/frames-N/ is kept)

Each measure runs in a child process of its own and reports its peak RSS beyond what it held before
the measured call (the DataFrame built first, for input; the interpreter with pandas loaded, for output):
  input      a pandas DataFrame of N rows (two text columns, a date) spooled into a job's input
  job        the job run against the simulator (a separate process), N requests (not a memory figure)
  to_pandas  the finished job as a pandas DataFrame (peak beyond the frame's own size is printed too)
  to_polars  the same as a polars DataFrame
  export     the same written as Parquet (bounded: row groups of 10,000)
The table measures print the peak beyond the frame too (the target: under 300 MiB at 1,000,000;
polars' `estimated_size` counts a text's bytes, not the 16-byte view polars keeps of each, so its
figure beyond the frame is the larger). `--only` runs the named measures (the job is run when it is not
there yet); `--repeat R` runs each R times, in turn (a shared machine's figures vary run to run).
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import time

WORK = os.path.join(os.path.dirname(__file__), "work")


def _rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def frame(n: int):
    import pandas as pd
    return pd.DataFrame({"question": [f"what is {i} + {i}? answer in one word" for i in range(n)],
                         "topic": [f"topic-{i % 97}" for i in range(n)],
                         "asked": pd.date_range("2024-01-01", periods=n, freq="s")})


def measure(what: str, n: int, out: str, url: str = "") -> None:
    """One measure, in this (child) process: prints `what seconds peak_beyond_mib extra`."""
    import batch_scheduler
    from batch_scheduler.job.api import spool_iterable
    from batch_scheduler.job.input.tables import table_rows
    extra = ""
    if what == "input":
        df = frame(n)
        before = _rss_mib()
        t0 = time.monotonic()
        spool_iterable(table_rows(df), os.path.join(out, "spool"))
    elif what == "job":
        df = frame(n)
        before = _rss_mib()
        t0 = time.monotonic()
        result = batch_scheduler.run(df, os.path.join(out, "job"), base_url=url, api_key="bench", template="{question}",
                                     model="claude-haiku-4-5", max_tokens=16, poll_min=0.2, poll_max=1.0, shards=16)
        extra = result.message
    else:
        import pandas  # noqa: F401 - loaded before the baseline
        import polars  # noqa: F401
        import pyarrow  # noqa: F401
        before = _rss_mib()
        t0 = time.monotonic()
        if what == "to_pandas":
            got = batch_scheduler.to_pandas(os.path.join(out, "job"))
            frame_mib = got.memory_usage(deep=True).sum() / 2**20
        elif what == "to_polars":
            got = batch_scheduler.to_polars(os.path.join(out, "job"))
            frame_mib = got.estimated_size() / 2**20
        else:
            done = batch_scheduler.export(os.path.join(out, "job"), os.path.join(out, "answers.parquet"))
            extra = f"{done.rows:,} rows"
        if what != "export":
            extra = f"frame {frame_mib:,.0f} MiB, beyond it {_peak_mib() - before - frame_mib:,.0f} MiB, {len(got):,} rows"
    print(f"{what} {time.monotonic() - t0:.1f} {_peak_mib() - before:.0f} {extra}")


MEASURES = ("input", "job", "to_pandas", "to_polars", "export")


def main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.frames", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("n", nargs="?", type=int, default=1_000_000, help="rows (1,000,000)")
    ap.add_argument("--only", default=",".join(MEASURES), help=f"comma-separated measures ({','.join(MEASURES)})")
    ap.add_argument("--repeat", type=int, default=1, help="runs of each measure, in turn (1)")
    o = ap.parse_args(argv)
    only = [w.strip() for w in o.only.split(",") if w.strip()]
    unknown = sorted(set(only) - set(MEASURES))
    if unknown:
        ap.error(f"--only: unknown measure {', '.join(unknown)} (choose from {', '.join(MEASURES)})")
    run(o.n, only, o.repeat)


def run(n: int, only: list[str], repeat: int) -> None:
    from batch_scheduler.simulator.process import SimulatorProcess
    out = os.path.join(WORK, f"frames-{n}")
    os.makedirs(out, exist_ok=True)
    first = [] if "job" in only or os.path.exists(os.path.join(out, "job", "summary.json")) else ["job"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([os.path.dirname(WORK) + "/..", os.environ.get("PYTHONPATH", "")])}
    with SimulatorProcess([]) as sim:
        for what in first + [w for _ in range(repeat) for w in MEASURES if w in only]:  # the tables need the job
            line = subprocess.run([sys.executable, "-m", "bench.frames", "--one", what, str(n), out, sim.url],
                                  capture_output=True, text=True, env=env, check=False)
            if line.returncode:
                print(f"{what}: failed\n{line.stderr[-2000:]}")
                return
            name, seconds, peak, *rest = line.stdout.split(maxsplit=3)
            print(f"{name:10} {float(seconds):8.1f} s   peak RSS beyond the start {float(peak):7.0f} MiB   "
                  f"{rest[0].strip() if rest else ''}", flush=True)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--one"]:
        measure(sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5])
    else:
        main(sys.argv[1:])
