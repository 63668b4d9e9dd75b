"""Benchmark inputs: N article-summary requests (the demo's job as request lines), made once and cached.

bench/work/requests-N.jsonl (git-ignored). Lines are about 1 KB: a Sonnet request with a system
prompt and a 60-140 word article, custom_ids article-0000000 ... The generator is seeded, so a cached
file is the same file a fresh one would be; it is written to a temporary name and renamed, so a file
under the final name is always whole.
"""

from __future__ import annotations

import os
import time

from batch_scheduler.commands.demo import make_requests

VERSION = 2  # bump when the generator changes, so stale caches are not reused


def input_path(work_dir: str, n: int) -> str:
    return os.path.join(work_dir, f"requests-v{VERSION}-{n}.jsonl")


def ensure_input(work_dir: str, n: int, say=print) -> str:
    path = input_path(work_dir, n)
    if os.path.exists(path):
        return path
    os.makedirs(work_dir, exist_ok=True)
    t0 = time.monotonic()
    make_requests(path, n)
    say(f"bench: generated {n:,} requests in {path} ({os.path.getsize(path) / 1e6:,.0f} MB, "
        f"{time.monotonic() - t0:.1f}s)")
    return path
