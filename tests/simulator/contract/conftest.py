"""The official SDKs cannot tell the simulator from the real APIs.

Each test drives the in-process simulator through `anthropic` / `openai` (the dev extra installs the
newest) with retries off, and every answer the SDK receives is recorded on the way in and validated
strictly against the SDK type of its route (recorder.py). When an SDK changes, these tests say where
the simulator drifted.
"""

from __future__ import annotations

import anthropic
import openai
import pytest

from batch_scheduler.simulator import SimConfig, Simulator

from ..helpers import FakeClock
from .recorder import Recorder

KEY = "sk-contract"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def sim(clock):
    async with Simulator(SimConfig(seed=3, processing_s=10), clock=clock) as s:
        yield s


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
async def claude(sim, recorder):
    async with anthropic.AsyncAnthropic(api_key=KEY, base_url=sim.url, max_retries=0,
                                        http_client=recorder.client(anthropic)) as client:
        yield client
    recorder.assert_exact()


@pytest.fixture
async def oai(sim, recorder):
    async with openai.AsyncOpenAI(api_key=KEY, base_url=sim.url + "/v1", max_retries=0,
                                  http_client=recorder.client(openai)) as client:
        yield client
    recorder.assert_exact()
