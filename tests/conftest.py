"""Shared fixtures: an in-process simulator and settings pointing at it."""

from __future__ import annotations

import pytest

from batch_scheduler.core.settings import RetryPolicy, Settings

KEY = "sk-test-key-0123456789"
FAST_RETRY = RetryPolicy(attempts=10, deadline_s=60, initial_wait_s=0.005, max_wait_s=0.05)


# what the process environment may hold on a developer's machine and would change a test's calls
AMBIENT = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "all_proxy",
           "no_proxy", "ANTHROPIC_AUTH_TOKEN", "ANTHROPIC_CUSTOM_HEADERS", "OPENAI_CUSTOM_HEADERS", "OPENAI_ORG_ID",
           "OPENAI_PROJECT_ID")


@pytest.fixture(autouse=True)
def _hermetic_environment(monkeypatch):
    """Every HTTP client trusts the environment (proxies); tests set what they need, nothing else."""
    for name in AMBIENT:
        monkeypatch.delenv(name, raising=False)


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
