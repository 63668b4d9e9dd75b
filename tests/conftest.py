"""Shared fixtures: an in-process simulator and settings pointing at it."""

from __future__ import annotations

import pytest

from batch_scheduler.core.settings import RetryPolicy, Settings

KEY = "sk-test-key-0123456789"
FAST_RETRY = RetryPolicy(attempts=10, deadline_s=60, initial_wait_s=0.005, max_wait_s=0.05)


@pytest.fixture
async def sim():
    from batch_scheduler.simulator import SimConfig, Simulator
    simulator = Simulator(SimConfig(seed=1234))
    await simulator.start()
    try:
        yield simulator
    finally:
        await simulator.stop()


def fast_settings(url: str, **changes) -> Settings:
    base = dict(api_key=KEY, base_url=url, batch_size=100, concurrency=4, poll_min_s=0.01, poll_max_s=0.05,
                shards=4, retry=FAST_RETRY, model=None)
    base.update(changes)
    return Settings(**base)
