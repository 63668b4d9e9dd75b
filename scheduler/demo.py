"""`make demo`: the article-summary job (100,000 requests) through the built-in simulator, no key needed.

    python -m scheduler.demo [--requests N] [--out DIR] [--no-faults]

Generates demo-out/articles.jsonl (once), starts the simulator in its own process with every fault
switched on, runs `batch-scheduler run` against it and prints the summary.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time

import orjson

WORDS = ("market river policy science harbour city council budget energy school music league storm "
         "village research vaccine rail bridge festival election court drought satellite museum farm "
         "factory port reform climate library startup transit coast mountain hospital union").split()


def make_articles(path: str, n: int, seed: int = 7) -> None:
    rng = random.Random(seed)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        for i in range(n):
            title = " ".join(rng.choice(WORDS) for _ in range(5)).capitalize()
            body = " ".join(rng.choice(WORDS) for _ in range(rng.randint(60, 140)))
            req = {"custom_id": f"article-{i:07d}",
                   "params": {"model": "claude-sonnet-4-5", "max_tokens": 200,
                              "system": "You summarise news articles in three plain sentences.",
                              "messages": [{"role": "user", "content": f"Title: {title}\n\n{body}"}]}}
            f.write(orjson.dumps(req) + b"\n")
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=100_000)
    ap.add_argument("--out", default="demo-out")
    ap.add_argument("--no-faults", action="store_true")
    args = ap.parse_args(argv)

    from .cli import main as cli_main
    from .simulator.process import SimulatorProcess

    os.makedirs(args.out, exist_ok=True)
    inp = os.path.join(args.out, f"articles-{args.requests}.jsonl")
    if not os.path.exists(inp):
        t = time.monotonic()
        make_articles(inp, args.requests)
        print(f"demo: wrote {args.requests:,} article-summary requests to {inp} "
              f"({os.path.getsize(inp) / 1e6:,.1f} MB, {time.monotonic() - t:.1f}s)")
    job = os.path.join(args.out, "job")
    if os.path.exists(os.path.join(job, "ledger.db")):
        import shutil
        shutil.rmtree(job)
    sim_args = ["--processing-s", "0.5"] + ([] if args.no_faults else ["--faults", "--seed", "1"])
    with SimulatorProcess(sim_args) as sim:
        print(f"demo: simulator at {sim.url}" + ("" if args.no_faults else
              " with every fault on (5% calls failing, 3% transient errors, 1% expired, 10% downloads cut, "
              "2% create answers lost)"))
        os.environ["ANTHROPIC_API_KEY"] = "sk-demo-simulator"  # the simulator accepts any key
        code = cli_main(["run", inp, "--out", job, "--base-url", sim.url, "--poll-min", "0.2",
                         "--poll-max", "2", "--batch-size", "5000", "--concurrency", "8"])
        stats = sim.stats()
    with open(os.path.join(job, "summary.json"), "rb") as f:
        summary = orjson.loads(f.read())
    print(orjson.dumps(summary, option=orjson.OPT_INDENT_2).decode())
    paid = stats.get("requests_created", 0)
    print(f"demo: exit {code}; results in {job}/results/; the simulator was paid for {paid:,} requests "
          f"for {summary['requests']['accepted']:,} accepted ({paid / max(1, summary['requests']['accepted']):.3f}x)")
    return code


if __name__ == "__main__":
    sys.exit(main())
