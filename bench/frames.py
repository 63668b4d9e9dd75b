"""Tables in and out at scale: peak RSS of DataFrame input and of to_pandas / to_polars / export.

    python -m bench.frames [N]          (default 1,000,000 rows; bench/work/frames-N/ is kept)

Each measure runs in a child process of its own and reports its peak RSS beyond what it held before
the measured call (the DataFrame built first, for input; the interpreter with pandas loaded, for output):
  input      a pandas DataFrame of N rows (two text columns, a date) spooled into a job's input
  job        the job run against the simulator (a separate process), N requests (not a memory figure)
  to_pandas  the finished job as a pandas DataFrame (peak beyond the frame's own size is printed too)
  to_polars  the same as a polars DataFrame
  export     the same written as Parquet (bounded: row groups of 10,000)
"""

from __future__ import annotations

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
            extra = f"frame {got.memory_usage(deep=True).sum() / 2**20:,.0f} MiB, {len(got):,} rows"
        elif what == "to_polars":
            got = batch_scheduler.to_polars(os.path.join(out, "job"))
            extra = f"frame {got.estimated_size() / 2**20:,.0f} MiB, {len(got):,} rows"
        else:
            done = batch_scheduler.export(os.path.join(out, "job"), os.path.join(out, "answers.parquet"))
            extra = f"{done.rows:,} rows"
    print(f"{what} {time.monotonic() - t0:.1f} {_peak_mib() - before:.0f} {extra}")


def main(n: int) -> None:
    from batch_scheduler.simulator.process import SimulatorProcess
    out = os.path.join(WORK, f"frames-{n}")
    os.makedirs(out, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([os.path.dirname(WORK) + "/..", os.environ.get("PYTHONPATH", "")])}
    with SimulatorProcess([]) as sim:
        for what in ("input", "job", "to_pandas", "to_polars", "export"):
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
        main(int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000)
