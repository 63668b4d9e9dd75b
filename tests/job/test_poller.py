"""One poll loop tracks many batches; list calls stand for retrieve calls when many are due."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from batch_scheduler.core import errors
from batch_scheduler.core.http import HttpClient
from batch_scheduler.job.send.poller import Poller
from batch_scheduler.providers.anthropic.provider import AnthropicProvider

from ..conftest import fast_settings
from ..helpers import request


async def test_one_poll_loop_tracks_a_thousand_batches_mostly_with_list_calls(sim):
    sim.config.processing_s = 0.3
    settings = fast_settings(sim.url, poll_min_s=0.05, poll_max_s=0.2)
    ended: list[str] = []
    all_ended = asyncio.Event()
    async with HttpClient(AnthropicProvider.headers(settings), settings.retry, secret=settings.api_key) as http:
        provider = AnthropicProvider(settings, http)

        async def on_ended(payload, info):
            ended.append(payload)
            if len(ended) == 1_000:
                all_ended.set()

        poller = Poller(provider, on_ended, poll_min_s=settings.poll_min_s, poll_max_s=settings.poll_max_s)
        for i in range(1_000):
            info = await provider.create([orjson.dumps(request(f"p{i}"))], tag="t")
            poller.track(info.id, info.id, info.created_at)
        task = asyncio.create_task(poller.run())
        await asyncio.wait_for(all_ended.wait(), 30)
        poller.stop()
        await task
    assert sorted(ended) == sorted(set(ended)) and len(ended) == 1_000
    assert poller.stats.lists > 0
    assert poller.stats.retrieves < 200, poller.stats  # one list page stands for up to 1,000 retrieves


class SteppingClock:
    """A clock that moves `step_s` each time it is read: time passes without any test sleeping on it."""

    def __init__(self, step_s: float):
        self.now = 0.0
        self.step_s = step_s

    def __call__(self) -> float:
        self.now += self.step_s
        return self.now


async def test_a_404_right_after_create_is_polled_again_until_the_batch_shows_up(sim):
    settings = fast_settings(sim.url)
    ended = asyncio.Event()
    async with HttpClient(AnthropicProvider.headers(settings), settings.retry, secret=settings.api_key) as http:
        provider = AnthropicProvider(settings, http)
        info = await provider.create([orjson.dumps(request("g1"))], tag="t")
        sim.config.ghost_404_s = 3600  # the batch answers 404 ...

        async def on_ended(payload, got):
            ended.set()

        poller = Poller(provider, on_ended, poll_min_s=0.01, poll_max_s=0.02, not_found_grace_s=300)
        poller.track(info.id, info.id, info.created_at)
        task = asyncio.create_task(poller.run())
        while poller.stats.not_found < 3:
            await asyncio.sleep(0.01)
        sim.config.ghost_404_s = 0  # ... until it shows up
        await asyncio.wait_for(ended.wait(), 10)
        poller.stop()
        await task
    assert sim.stats["ghost_404s"] >= 3


async def test_a_batch_answering_404_past_the_grace_stops_the_poll_loop_naming_it(sim):
    settings = fast_settings(sim.url)
    async with HttpClient(AnthropicProvider.headers(settings), settings.retry, secret=settings.api_key) as http:
        provider = AnthropicProvider(settings, http)
        info = await provider.create([orjson.dumps(request("g1"))], tag="t")
        sim.config.ghost_404_s = 3600

        async def on_ended(payload, got):
            raise AssertionError("a batch that answers 404 never ends")

        poller = Poller(provider, on_ended, poll_min_s=0.01, poll_max_s=0.02, not_found_grace_s=5,
                        clock=SteppingClock(0.5))
        poller.track(info.id, info.id, info.created_at)
        with pytest.raises(errors.BatchVanished) as err:
            await asyncio.wait_for(poller.run(), 10)
    assert str(err.value) == (f"batch {info.id}: retrieve answered 404 not_found_error for more than 5 s "
                              f"(--not-found-grace) since its create or its last answer; the ledger keeps the batch: "
                              f"run the same command again to look for it again")
    assert 1 <= poller.stats.not_found <= 10
