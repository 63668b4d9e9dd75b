"""A node (`daemon --ledger URL`) in-process against the simulator: it claims queued jobs, runs them over
the PostgreSQL ledger with results as write-once objects, and settles each one."""

from __future__ import annotations

import asyncio
import json
import os
from collections import Counter
from pathlib import Path

import pytest

from batch_scheduler.cluster.node import Node, NodeConfig
from batch_scheduler.cluster.queue import Queue

from ..conftest import KEY
from ..daemon.helpers import until
from ..helpers import write_requests
from .helpers import manifest_lines, queue_job, result_files

FAST = {"batch_size": 50, "shards": 3, "concurrency": 4}
NODE_FAST = {"poll_min": 0.02, "poll_max": 0.1}  # how a node polls is the node's to set, never a job's


def node_env(sim_url: str) -> dict[str, str]:
    return {"ANTHROPIC_API_KEY": KEY, "ANTHROPIC_BASE_URL": sim_url}


async def states(url: str) -> dict[str, str]:
    q = Queue(url)
    try:
        return {j["name"]: j["state"] for j in await asyncio.to_thread(q.status)}
    finally:
        await asyncio.to_thread(q.close)


@pytest.fixture
async def node(pg_url, sim, tmp_path):
    n = Node(NodeConfig(pg_url, node_id="node-a", lease_s=6, poll_s=0.05, flags=NODE_FAST,
                        allow_roots=(str(tmp_path),)), load_env=lambda: node_env(sim.url))
    task = asyncio.create_task(n.serve())
    await until(lambda: n.started.is_set() or task.done(), "node started")
    yield n
    n.handle_signal(15)
    assert await asyncio.wait_for(task, 20) == 0


async def test_a_node_runs_queued_jobs_to_done_and_lists_every_result_once(pg_url, node, sim, tmp_path):
    want = {}
    for name, n in (("alpha", 230), ("beta", 120)):
        inp = str(tmp_path / f"{name}.jsonl")
        want[name] = write_requests(inp, n, prefix=name)
        await asyncio.to_thread(queue_job, pg_url, name, [inp], str(tmp_path / f"out-{name}"), FAST)

    async def all_done() -> bool:
        return set((await states(pg_url)).values()) == {"done"}
    deadline = asyncio.get_running_loop().time() + 60
    while not await all_done():
        assert asyncio.get_running_loop().time() < deadline, await states(pg_url)
        await asyncio.sleep(0.05)

    for name, ids in want.items():
        check_out(str(tmp_path / f"out-{name}"), name, ids)
    assert sim.stats["requests_created"] == 350


def check_out(out: str, name: str, ids: list[str]) -> None:
    """Every id once in the objects the manifest lists, nothing else in results/, the summary and rejects."""
    assert Counter(r["custom_id"] for r in manifest_lines(out)) == Counter(ids)
    manifest = json.loads(Path(out, "_manifest.json").read_text())
    assert manifest["job"] == name and manifest["objects"] == result_files(out)
    summary = json.loads(Path(out, "summary.json").read_text())
    assert summary["requests"]["finished"] == len(ids)
    assert os.path.exists(os.path.join(out, "rejected.jsonl"))


async def test_cancel_of_a_running_job_cancels_its_batches_and_settles_it_cancelled(pg_url, node, sim, tmp_path):
    sim.config.processing_s = 30.0  # the batches stay in flight until cancelled
    inp = str(tmp_path / "in.jsonl")
    write_requests(inp, 200, prefix="c")
    await asyncio.to_thread(queue_job, pg_url, "to-cancel", [inp], str(tmp_path / "out"), FAST)
    await until(lambda: sim.stats["creates"] >= 2, "batches created")
    q = Queue(pg_url)
    try:
        assert await asyncio.to_thread(q.cancel, "to-cancel") == "running"
    finally:
        await asyncio.to_thread(q.close)
    deadline = asyncio.get_running_loop().time() + 30
    while (await states(pg_url))["to-cancel"] != "cancelled":
        assert asyncio.get_running_loop().time() < deadline, await states(pg_url)
        await asyncio.sleep(0.05)
    assert sim.stats["cancels"] >= 2
