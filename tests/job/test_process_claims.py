"""Every engine of one process shares one claims registry: two `run()` calls in two threads (each its own
event loop), their requests with ids of their own, never adopt each other's batches for good, and a lost
create is paid about once, not twice."""

from __future__ import annotations

import asyncio
import threading

import pytest

import batch_scheduler

from ..helpers import ids_of, read_results, write_requests

FAST = dict(poll_min=0.01, poll_max=0.05, batch_size=100, shards=4, api_key="sk-claims-test", concurrency=4)


@pytest.fixture
def no_env(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    for name in ("ANTHROPIC_API_KEY", "CLAUDE_API_KEY", "ANTHROPIC_BASE_URL", "CLAUDE_BASE_URL", "CLAUDE_MODEL",
                 "ANTHROPIC_MODEL", "BATCH_PROVIDER"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


async def test_two_threads_with_lost_creates_keep_their_own_answers_and_pay_about_once(sim, no_env):
    sim.config.lost_create_rate = 0.3
    n = 2_000
    ids = {name: write_requests(str(no_env / f"{name}.jsonl"), n, prefix=name) for name in ("a", "b")}
    results: dict[str, object] = {}

    def one(name: str) -> None:
        results[name] = batch_scheduler.run(no_env / f"{name}.jsonl", no_env / f"out-{name}", base_url=sim.url,
                                            **FAST)

    threads = [threading.Thread(target=one, args=(name,)) for name in ids]
    for t in threads:
        t.start()
    await asyncio.to_thread(lambda: [t.join() for t in threads])
    for name, want in ids.items():
        result = results[name]
        assert result.exit_code == 0, result.message  # type: ignore[attr-defined]
        assert sorted(ids_of(read_results(str(no_env / f"out-{name}")))) == want
    assert sim.stats["lost_creates"] > 0
    assert sim.stats["requests_created"] <= 1.05 * 2 * n, sim.stats
