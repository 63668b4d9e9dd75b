"""What the cluster tests share: a job queued and claimed in a fresh ledger, and results read the way a
reader must (through OUT/_manifest.json)."""

from __future__ import annotations

import asyncio
import json
import os

import obstore
import orjson

from batch_scheduler.cluster.queue import Claimed, Queue
from batch_scheduler.state.ledger import pg


def queue_job(url: str, name: str, inputs: list[str], out: str, options: dict | None = None) -> int:
    pg.ensure_schema(url)
    q = Queue(url)
    try:
        return q.submit(name, {"inputs": inputs, "out": out, "options": options or {}})
    finally:
        q.close()


async def aclaim(url: str, node: str = "node-a", lease_s: float = 60.0) -> Claimed:
    q = Queue(url)
    try:
        await q.register(node, None)
        got = await q.claim(node, lease_s)
        assert got is not None, "nothing to claim"
        return got
    finally:
        await asyncio.to_thread(q.close)


def manifest_lines(out: str) -> list[dict]:
    """Every result line of a finished job in a local OUT, read through its manifest."""
    with open(os.path.join(out, "_manifest.json"), "rb") as f:
        doc = orjson.loads(f.read())
    lines = []
    for key in doc["objects"]:
        with open(os.path.join(out, *key.split("/")), "rb") as f:
            data = f.read()
        assert data.endswith(b"\n"), f"partial line at the end of {key}"
        lines += [orjson.loads(x) for x in data.splitlines()]
    return lines


def result_files(out: str) -> list[str]:
    root = os.path.join(out, "results")
    return sorted(f"results/{n}" for n in os.listdir(root)) if os.path.isdir(root) else []


def bucket_lines(store: object, prefix: str) -> tuple[list[dict], list[str], dict]:
    manifest = json.loads(bytes(obstore.get(store, f"{prefix}/_manifest.json").bytes()))
    lines = []
    for key in manifest["objects"]:
        data = bytes(obstore.get(store, f"{prefix}/{key}").bytes())
        lines += [json.loads(x) for x in data.splitlines()]
    listed = sorted(m["path"][len(prefix) + 1:] for batch in obstore.list(store, f"{prefix}/results")
                    for m in batch)
    return lines, listed, manifest
