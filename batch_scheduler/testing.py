"""For your own tests: the built-in simulator of the batch APIs, served in-process on loopback.

    from batch_scheduler.testing import simulator

    async def test_my_pipeline(tmp_path):
        async with simulator(errored_rate=0.05, seed=1) as url:
            result = await batch_scheduler.arun(rows, tmp_path / "out", base_url=url, api_key="any",
                                                template="...", model="claude-haiku-4-5", max_tokens=100)
        assert result.ok

It speaks all three providers (Anthropic Message Batches, OpenAI files + batches, the inline proxy)
with any non-empty key, and nothing leaves the machine.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from batch_scheduler.simulator import SimConfig, Simulator


@contextlib.asynccontextmanager
async def simulator(*, all_faults: bool = False, **faults: Any) -> AsyncIterator[str]:
    """Serve the simulator on a free loopback port for the block; yields its base URL (`http://127.0.0.1:N`).

    `faults` are the simulator's settings (`SimConfig` fields): `fail_rate`, `errored_rate`, `invalid_rate`,
    `expired_rate`, `cut_rate`, `lost_create_rate`, `batch_fail_rate`, `processing_s`, `queue_limit`,
    `valid_keys`, `seed`, ...; `all_faults=True` turns on the usual ones at once (what `simulate --faults`
    does). An unknown name is a TypeError naming it.
    """
    if "valid_keys" in faults and faults["valid_keys"] is not None:
        faults["valid_keys"] = set(faults["valid_keys"])
    config = SimConfig.all_faults(**faults) if all_faults else SimConfig(**faults)
    sim = Simulator(config)
    url = await sim.start("127.0.0.1", 0)
    try:
        yield url
    finally:
        await sim.stop()
