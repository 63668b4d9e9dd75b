"""Kill -9 soak: run the real CLI against a faulty simulator, SIGKILL it at random points, then finish.

    python -m tests.soak --kills 20 --requests 20000 [--seed 1]

Checks what a user relies on: every custom_id exactly once, no partial line in any shard, and the
requests paid for within 5% of the input (requests sent again on purpose after a transient error or
an expiry are counted apart: the provider does not bill those answers).
"""

from __future__ import annotations

import argparse
import glob
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

import orjson

KEY = "sk-soak-key"


@dataclass
class SoakResult:
    kills: int
    runs: int
    exit_code: int
    unique: int
    expected: int
    duplicates: int
    partial_lines: int
    paid: int
    retried: int
    wall_s: float

    @property
    def overpaid(self) -> float:
        return (self.paid - self.retried) / self.expected - 1.0


def write_input(path: str, n: int, model: str | None = "claude-haiku-4-5") -> None:
    """Message Batches lines; `model=None`: without a model (the job's --model fills it)."""
    with open(path, "wb") as f:
        for i in range(n):
            params = {"max_tokens": 32, "messages": [{"role": "user", "content": f"question number {i}"}]}
            f.write(orjson.dumps({"custom_id": f"soak-{i:07d}",
                                  "params": {"model": model, **params} if model else params}) + b"\n")


def check_shards(out: str) -> tuple[set[str], int, int]:
    seen: set[str] = set()
    dups = partial = 0
    for path in glob.glob(os.path.join(out, "results", "*.jsonl")):
        with open(path, "rb") as f:
            data = f.read()
        if data and not data.endswith(b"\n"):
            partial += 1
        for line in data.splitlines():
            try:
                cid = orjson.loads(line)["custom_id"]
            except (orjson.JSONDecodeError, KeyError):
                partial += 1
                continue
            if cid in seen:
                dups += 1
            seen.add(cid)
    return seen, dups, partial


def soak(*, kills: int, requests: int, seed: int, workdir: str, processing_s: float = 1.0,
         batch_size: int = 100, verbose: bool = False, model: str | None = "claude-haiku-4-5",
         run_args: tuple[str, ...] = (), env: dict[str, str] | None = None,
         sim_config: dict | None = None, provider: str = "anthropic") -> SoakResult:
    """`run_args`, `env` and `sim_config` (fields set on the simulator once it runs) choose another provider."""
    from batch_scheduler.simulator.process import SimulatorProcess

    rng = random.Random(seed)
    inp = os.path.join(workdir, "in.jsonl")
    out = os.path.join(workdir, "out")
    write_input(inp, requests, model)
    env = {**os.environ, "ANTHROPIC_API_KEY": KEY, "AZURE_OPENAI_API_KEY": KEY, "GEMINI_API_KEY": KEY, **(env or {})}
    started = time.monotonic()
    # the real set of faults: ghost 404s after create, requests missing from results and 409s included
    with SimulatorProcess(["--faults", "--seed", str(seed), "--processing-s", str(processing_s)]) as sim:
        if sim_config:
            sim.set_config(**sim_config)
        cmd = [sys.executable, "-m", "batch_scheduler", "run", inp, "--out", out, "--base-url", sim.url,
               "--batch-size", str(batch_size), "--concurrency", "4", "--poll-min", "0.05", "--poll-max", "0.3",
               "--shards", "4", "--max-attempts", "5", "--retry-wait", "0.5", "--provider", provider, *run_args]
        done_kills = runs = 0
        code = -1
        while done_kills < kills:
            runs += 1
            proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL,
                                    stderr=None if verbose else subprocess.DEVNULL)
            try:
                code = proc.wait(timeout=rng.uniform(0.4, 1.6))
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                done_kills += 1
                continue
            if code == 0:
                break  # finished before all the kills: the job was too small for the kill count
        runs += 1
        code = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL,
                              stderr=None if verbose else subprocess.DEVNULL, timeout=600).returncode
        stats = sim.stats()
    with open(os.path.join(out, "summary.json"), "rb") as f:
        summary = orjson.loads(f.read())
    seen, dups, partial = check_shards(out)
    expected = {f"soak-{i:07d}" for i in range(requests)}
    return SoakResult(kills=done_kills, runs=runs, exit_code=code, unique=len(seen & expected), expected=requests,
                      duplicates=dups + len(seen - expected), partial_lines=partial,
                      paid=int(stats["requests_created"]), retried=int(summary["attempts"]["requests_retried"]),
                      wall_s=time.monotonic() - started)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--requests", type=int, default=20_000)
    ap.add_argument("--batch-size", type=int, default=500)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--processing-s", type=float, default=2.5, help="simulated time for a batch to end")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        r = soak(kills=args.kills, requests=args.requests, seed=args.seed, workdir=tmp,
                 batch_size=args.batch_size, verbose=args.verbose, processing_s=args.processing_s)
    print(f"kills {r.kills}, runs {r.runs}, final exit {r.exit_code}, {r.unique:,}/{r.expected:,} custom_ids, "
          f"{r.duplicates} duplicates, {r.partial_lines} partial lines, paid {r.paid:,} "
          f"(retried on purpose {r.retried:,}), overpaid {r.overpaid:+.2%}, {r.wall_s:.0f}s")
    ok = r.exit_code == 0 and r.unique == r.expected and not r.duplicates and not r.partial_lines and r.overpaid <= 0.05
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
