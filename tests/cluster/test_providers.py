"""A cluster node (real PostgreSQL, results under its --allow-root) with each newer provider: a queued job
finishes exactly once, every result listed once in the job's manifest."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from batch_scheduler.cluster.node import Node, NodeConfig

from ..conftest import KEY
from ..daemon.helpers import until
from ..helpers import write_requests
from ..setups import NEW_PROVIDERS, batches_of, set_up, use_process_env
from .helpers import manifest_lines, queue_job
from .test_node import NODE_FAST, states

pytestmark = pytest.mark.timeout(90)


@pytest.mark.parametrize("name", NEW_PROVIDERS)
async def test_a_queued_job_finishes_exactly_once_with_each_provider(pg_url, sim, tmp_path, monkeypatch, request,
                                                                     name):
    setup = set_up(name, sim, tmp_path, KEY, request.getfixturevalue("moto_server") if name == "bedrock" else None)
    use_process_env(setup, monkeypatch)
    inp, out = str(tmp_path / "in.jsonl"), str(tmp_path / "out")
    ids = write_requests(inp, 3 * setup.batch_size, prefix=name, model=setup.line_model)
    await asyncio.to_thread(queue_job, pg_url, name, [inp], out, {"batch_size": setup.batch_size, "shards": 2})
    node = Node(NodeConfig(pg_url, node_id="node-p", lease_s=6, poll_s=0.05, flags={**NODE_FAST, **setup.flags},
                           allow_roots=(str(tmp_path),)), load_env=lambda: dict(setup.env))
    task = asyncio.create_task(node.serve())
    try:
        await until(lambda: node.started.is_set() or task.done(), "node started")
        deadline = asyncio.get_running_loop().time() + 60
        while (await states(pg_url))[name] not in ("done", "failed", "cancelled"):
            assert asyncio.get_running_loop().time() < deadline and not task.done(), await states(pg_url)
            await asyncio.sleep(0.05)
    finally:
        node.handle_signal(15)
        assert await asyncio.wait_for(task, 20) == 0
    assert (await states(pg_url))[name] == "done"
    assert Counter(r["custom_id"] for r in manifest_lines(out)) == Counter(ids)
    made = batches_of(sim, name)
    assert len(made) == 3 and sum(b.n for b in made) == len(ids), "every batch went through the provider once"
