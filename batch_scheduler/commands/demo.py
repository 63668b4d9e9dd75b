"""`make demo`: the article-summary job (100,000 articles) through the built-in simulator, no key needed.

    python -m batch_scheduler.commands.demo [--requests N] [--out DIR] [--no-faults]

Generates demo-out/articles-N.csv (id, title, content; once), prints the dry run's estimate (requests,
batches, tokens, cost), starts the simulator in its own process with every fault switched on, runs
`batch-scheduler run` on the CSV with a prompt template against it and prints the summary.
"""

from __future__ import annotations

import argparse
import csv
import os
import random
import sys
import time
from collections.abc import Iterator

import orjson

WORDS = ("market river policy science harbour city council budget energy school music league storm "
         "village research vaccine rail bridge festival election court drought satellite museum farm "
         "factory port reform climate library startup transit coast mountain hospital union").split()


TEMPLATE = "Summarise this news article in three plain sentences.\n\nTitle: {title}\n\n{content}"
SYSTEM = "You are a careful news editor. Keep names, numbers and places exact."
MODEL, MAX_TOKENS = "claude-sonnet-4-5", 200
JOB = ["--template", TEMPLATE, "--system", SYSTEM, "--max-tokens", str(MAX_TOKENS), "--model", MODEL,
       "--id-field", "id"]


def article_rows(n: int, seed: int = 7) -> Iterator[tuple[str, str, str]]:
    """(id, title, content) of n made-up news articles of 60-140 words; seeded, so always the same."""
    rng = random.Random(seed)
    for i in range(n):
        title = " ".join(rng.choice(WORDS) for _ in range(5)).capitalize()
        body = " ".join(rng.choice(WORDS) for _ in range(rng.randint(60, 140)))
        yield f"article-{i:07d}", title, body


def make_articles(path: str, n: int) -> None:
    """A CSV of articles (id, title, content), as a newsroom export would give it."""
    tmp = path + ".tmp"
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        out = csv.writer(f)
        out.writerow(["id", "title", "content"])
        out.writerows(article_rows(n))
    os.replace(tmp, path)


def make_requests(path: str, n: int) -> None:
    """The same job as ready Message Batches request lines (what --template makes of the CSV): ~1 KB each."""
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        for cid, title, body in article_rows(n):
            f.write(orjson.dumps({"custom_id": cid, "params": {
                "model": MODEL, "max_tokens": MAX_TOKENS, "system": SYSTEM,
                "messages": [{"role": "user", "content": TEMPLATE.format(title=title, content=body)}]}}) + b"\n")
    os.replace(tmp, path)


def answered_once(job: str) -> tuple[int, int]:
    """(custom_ids answered, of which more than once), read back from the shards."""
    from batch_scheduler import read_results

    seen: set[str] = set()
    twice = 0
    for line in read_results(job):
        cid = str(line.get("custom_id"))
        if cid in seen:
            twice += 1
        seen.add(cid)
    return len(seen), twice


def ending(job: str, summary: dict, stats: dict, code: int, took_s: float, out: str) -> str:
    """What a person reads at the end: what happened, what it cost, where it is, what to run next."""
    accepted = summary["requests"]["accepted"]
    answered, twice = answered_once(job)
    paid = stats.get("requests_created", 0)
    ok = "every request answered exactly once" if answered == accepted and not twice else (
        f"{answered:,} of {accepted:,} answered, {twice:,} twice")
    py = f"import batch_scheduler; print(batch_scheduler.job_status({job!r})['state'])"
    return "\n".join([
        f"demo: {summary['state']} in {took_s:.0f} s (exit {code}): {accepted:,} requests, {ok}",
        f"  paid      {paid:,} requests sent to the provider for {accepted:,} accepted ({paid / max(1, accepted):.3f}x: "
        "transient answers sent again)",
        f"  cost      ${summary['cost_usd']:,.2f} at batch prices (${summary['standard_cost_usd']:,.2f} standard, "
        f"saved ${summary['saving_usd']:,.2f})",
        f"  results   {job}/results/ (sharded JSONL); the account of the run: {job}/summary.json",
        "next:",
        f"  .venv/bin/batch-scheduler status {job}",
        f"  .venv/bin/batch-scheduler export {job} -o {out}/answers.csv",
        f"  .venv/bin/python -c \"{py}\"",
    ])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=100_000)
    ap.add_argument("--out", default="demo-out")
    ap.add_argument("--no-faults", action="store_true")
    args = ap.parse_args(argv)

    from batch_scheduler.commands.main import main as cli_main
    from batch_scheduler.simulator.process import SimulatorProcess

    os.makedirs(args.out, exist_ok=True)
    inp = os.path.join(args.out, f"articles-{args.requests}.csv")
    if not os.path.exists(inp):
        t = time.monotonic()
        make_articles(inp, args.requests)
        print(f"demo: wrote {args.requests:,} articles to {inp} "
              f"({os.path.getsize(inp) / 1e6:,.1f} MB, {time.monotonic() - t:.1f}s)")
    print("demo: what it will cost (--dry-run: validates every row, sends nothing):")
    os.environ["ANTHROPIC_API_KEY"] = "sk-demo-simulator"  # the simulator accepts any key
    # --count-sample 0: the demo's key is the simulator's, which is not running yet; a dry run with a real key
    # counts a sample exactly at the API (free) instead
    if cli_main(["run", inp, "--out", os.path.join(args.out, "dry"), "--batch-size", "5000", *JOB, "--dry-run",
                 "--count-sample", "0"]):
        return 1
    job = os.path.join(args.out, "job")
    if os.path.exists(os.path.join(job, "ledger.db")):
        import shutil
        shutil.rmtree(job)
    started = time.monotonic()
    sim_args = ["--processing-s", "0.5"] + ([] if args.no_faults else ["--faults", "--seed", "1"])
    with SimulatorProcess(sim_args) as sim:
        assert sim.url is not None  # entering started it
        print(f"demo: simulator at {sim.url}" + ("" if args.no_faults else
              " with the real faults on (5% calls failing incl. 409/504, 3% transient errors, 1% expired, 10% "
              "downloads cut, 2% create answers lost, 1 s of ghost 404s after create, 0.5% of requests missing "
              "from results)"))
        code = cli_main(["run", inp, "--out", job, "--base-url", sim.url, "--poll-min", "0.2",
                         "--poll-max", "2", "--batch-size", "5000", "--concurrency", "8", *JOB])
        stats = sim.stats()
    with open(os.path.join(job, "summary.json"), "rb") as f:
        summary = orjson.loads(f.read())
    print(ending(job, summary, stats, code, time.monotonic() - started, args.out))
    return code


if __name__ == "__main__":
    sys.exit(main())
