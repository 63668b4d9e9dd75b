"""One poll loop tracks many batches; list calls stand for retrieve calls when many are due."""

from __future__ import annotations

import asyncio

import orjson

from batch_scheduler.core.http import HttpClient
from batch_scheduler.job.poller import Poller
from batch_scheduler.providers.anthropic import AnthropicProvider

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
