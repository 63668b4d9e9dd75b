"""Fixtures of the simulator's tests: an in-process simulator on a fake clock, an HTTP session."""

from __future__ import annotations

import aiohttp
import pytest

from batch_scheduler.simulator import SimConfig, Simulator

from .helpers import FakeClock


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def sim(clock):
    async with Simulator(SimConfig(seed=7), clock=clock) as s:
        yield s


@pytest.fixture
async def http():
    async with aiohttp.ClientSession() as session:
        yield session
