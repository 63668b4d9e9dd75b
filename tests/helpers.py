"""Small helpers the tests share: request lines and reading result shards."""

from __future__ import annotations

import glob
import os

import orjson


def request(cid: str, text: str = "hello", *, model: str | None = "claude-sonnet-4-5", max_tokens: int = 64) -> dict:
    params: dict = {"max_tokens": max_tokens, "messages": [{"role": "user", "content": text}]}
    if model:
        params = {"model": model, **params}
    return {"custom_id": cid, "params": params}


def write_requests(path: str, n: int, *, prefix: str = "req", start: int = 0,
                   model: str | None = "claude-sonnet-4-5") -> list[str]:
    ids = []
    with open(path, "wb") as f:
        for i in range(start, start + n):
            cid = f"{prefix}-{i:06d}"
            ids.append(cid)
            f.write(orjson.dumps(request(cid, f"question {i}", model=model)) + b"\n")
    return ids


def read_results(out_dir: str) -> list[dict]:
    lines = []
    for path in sorted(glob.glob(os.path.join(out_dir, "results", "shard-*.jsonl"))):
        with open(path, "rb") as f:
            data = f.read()
        assert not data or data.endswith(b"\n"), f"partial line at the end of {path}"
        lines += [orjson.loads(line) for line in data.splitlines() if line]
    return lines


def ids_of(results: list[dict]) -> list[str]:
    return [r["custom_id"] for r in results]
