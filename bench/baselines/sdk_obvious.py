"""Baseline (b): the official `anthropic` SDK, written the way a competent user writes it.

    python -m bench.baselines.sdk_obvious INPUT OUT_FILE --base-url URL --batch-size N --concurrency K
        --poll-min S

Read the file, cut it into batches of N, and for each batch, under a semaphore of K: create it,
retrieve it every poll-min seconds until it has ended, iterate its results and append them to one
output file. Nothing clever and nothing careless: the SDK's own retries, JSON and models; no ledger.
Writes OUT_FILE.summary.json for the harness (first submission, retrieve calls, when each batch's
results were written).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time

from anthropic import AsyncAnthropic


async def run(args: argparse.Namespace) -> dict:
    started = time.monotonic()
    client = AsyncAnthropic(base_url=args.base_url, api_key=args.api_key)
    with open(args.input) as f:
        requests = [json.loads(line) for line in f if line.strip()]
    batches = [requests[i:i + args.batch_size] for i in range(0, len(requests), args.batch_size)]
    semaphore = asyncio.Semaphore(args.concurrency)
    stats: dict = {"requests": len(requests), "lines_written": 0, "first_submit_s": None, "retrieves": 0,
                   "batches": []}

    with open(args.out, "w") as out:
        async def process(batch_requests: list[dict]) -> None:
            async with semaphore:
                batch = await client.messages.batches.create(requests=batch_requests)
                if stats["first_submit_s"] is None:
                    stats["first_submit_s"] = round(time.monotonic() - started, 3)
                while batch.processing_status != "ended":
                    await asyncio.sleep(args.poll_min)
                    batch = await client.messages.batches.retrieve(batch.id)
                    stats["retrieves"] += 1
                async for result in await client.messages.batches.results(batch.id):
                    out.write(result.model_dump_json() + "\n")
                    stats["lines_written"] += 1
                out.flush()
                stats["batches"].append({"id": batch.id, "written_at": time.time()})

        await asyncio.gather(*(process(b) for b in batches))
    await client.close()
    stats["wall_time_s"] = round(time.monotonic() - started, 3)
    return stats


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.baselines.sdk_obvious", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("input")
    ap.add_argument("out")
    ap.add_argument("--base-url", required=True)
    ap.add_argument("--api-key", default="sk-bench-simulator")
    ap.add_argument("--batch-size", type=int, default=10_000)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--poll-min", type=float, default=0.05)
    args = ap.parse_args(argv)
    stats = asyncio.run(run(args))
    with open(args.out + ".summary.json", "w") as f:
        json.dump(stats, f)
    print(f"sdk_obvious: {stats['lines_written']:,} result lines in {stats['wall_time_s']:.2f}s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
