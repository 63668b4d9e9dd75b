"""Baseline (c): the article's approach, the program the project grew from.

    python -m bench.baselines.article INPUT OUT_FILE --base-url URL [--batch-size 5000] [--poll-min S]

The whole input in memory; batches of 5,000 (the article's margin under a 10,000 cap) sent one at
a time with synchronous calls (urllib.request: the article's `requests` library is not installed,
and urllib is what it does without one); each batch polled every poll-min seconds until it has
ended, its results read whole and kept in memory; every result written at the end. Talks to the
Anthropic Message Batches paths of the same simulator as the others.
Writes OUT_FILE.summary.json for the harness.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.request

PATH = "/v1/messages/batches"


class Client:
    def __init__(self, base_url: str, api_key: str):
        self.base_url = base_url.rstrip("/")
        self.headers = {"x-api-key": api_key, "anthropic-version": "2023-06-01",
                        "content-type": "application/json"}

    def call(self, method: str, url: str, body: dict | None = None) -> bytes:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(url, data=data, method=method, headers=self.headers)
        with urllib.request.urlopen(req, timeout=300) as resp:
            return resp.read()

    def create(self, requests: list[dict]) -> dict:
        return json.loads(self.call("POST", self.base_url + PATH, {"requests": requests}))

    def retrieve(self, batch_id: str) -> dict:
        return json.loads(self.call("GET", f"{self.base_url}{PATH}/{batch_id}"))

    def results(self, batch: dict) -> list[dict]:
        url = batch.get("results_url") or f"{self.base_url}{PATH}/{batch['id']}/results"
        return [json.loads(line) for line in self.call("GET", url).splitlines() if line.strip()]


def run(args: argparse.Namespace) -> dict:
    started = time.monotonic()
    client = Client(args.base_url, args.api_key)
    with open(args.input) as f:
        requests = [json.loads(line) for line in f.read().splitlines() if line.strip()]
    stats: dict = {"requests": len(requests), "lines_written": 0, "first_submit_s": None, "retrieves": 0,
                   "batches": []}
    results: list[dict] = []
    batch_ids: list[str] = []
    for i in range(0, len(requests), args.batch_size):
        batch = client.create(requests[i:i + args.batch_size])
        if stats["first_submit_s"] is None:
            stats["first_submit_s"] = round(time.monotonic() - started, 3)
        while batch["processing_status"] != "ended":
            time.sleep(args.poll_min)
            batch = client.retrieve(batch["id"])
            stats["retrieves"] += 1
        results.extend(client.results(batch))
        batch_ids.append(batch["id"])
    with open(args.out, "w") as f:
        for r in results:
            f.write(json.dumps(r) + "\n")
    written_at = time.time()
    stats["lines_written"] = len(results)
    stats["batches"] = [{"id": b, "written_at": written_at} for b in batch_ids]
    stats["wall_time_s"] = round(time.monotonic() - started, 3)
    return stats


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.baselines.article", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("input")
    ap.add_argument("out")
    ap.add_argument("--base-url", required=True)
    ap.add_argument("--api-key", default="sk-bench-simulator")
    ap.add_argument("--batch-size", type=int, default=5_000)
    ap.add_argument("--poll-min", type=float, default=0.05)
    args = ap.parse_args(argv)
    stats = run(args)
    with open(args.out + ".summary.json", "w") as f:
        json.dump(stats, f)
    print(f"article: {stats['lines_written']:,} result lines in {stats['wall_time_s']:.2f}s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
