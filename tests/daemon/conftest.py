"""The daemon tests' fixtures: a simulator that knows one key, and a .env that holds it."""

from __future__ import annotations

from pathlib import Path

import pytest

from batch_scheduler.simulator import SimConfig, Simulator

from .helpers import KEY


@pytest.fixture
def env_dir(tmp_path, monkeypatch) -> Path:
    """A directory whose .env holds KEY; nothing key-like comes from the test process's environment."""
    for name in ("ANTHROPIC_API_KEY", "CLAUDE_API_KEY", "ANTHROPIC_BASE_URL", "CLAUDE_BASE_URL", "CLAUDE_MODEL",
                 "BATCH_PROVIDER", "BATCH_DAEMON_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    d = tmp_path / "etc"
    d.mkdir()
    (d / ".env").write_text(f"ANTHROPIC_API_KEY={KEY}\n")
    return d


@pytest.fixture
async def sim():
    simulator = Simulator(SimConfig(valid_keys={KEY}, processing_s=0.3, seed=7))
    await simulator.start()
    try:
        yield simulator
    finally:
        await simulator.stop()
