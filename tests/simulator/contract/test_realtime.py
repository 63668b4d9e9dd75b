"""The SDKs' realtime calls drive the simulator: one Message, one ChatCompletion, the rate limit's 429."""

from __future__ import annotations

import anthropic
import openai
import pytest

from batch_scheduler.simulator import SimConfig

MODEL = "claude-sonnet-4-5"


async def test_anthropic_sdk_creates_a_message_with_usage_and_rate_limit_headers(sim, claude):
    sim.config = SimConfig(seed=3, realtime_rpm=5)
    raw = await claude.messages.with_raw_response.create(
        model=MODEL, max_tokens=100, messages=[{"role": "user", "content": "question"}])
    message = await raw.parse()
    assert message.type == "message" and message.usage.input_tokens > 0 and message.usage.output_tokens > 0
    assert raw.headers["anthropic-ratelimit-requests-limit"] == "5"
    assert raw.headers["anthropic-ratelimit-requests-remaining"] == "4"
    assert sim.stats["realtime_calls"] == 1


async def test_anthropic_message_cache_write_is_read_by_the_next_call(sim, claude):
    system = [{"type": "text", "text": "Be brief. " * 200, "cache_control": {"type": "ephemeral", "ttl": "1h"}}]
    first = await claude.messages.create(model=MODEL, max_tokens=50, system=system,
                                         messages=[{"role": "user", "content": "one"}])
    second = await claude.messages.create(model=MODEL, max_tokens=50, system=system,
                                          messages=[{"role": "user", "content": "two"}])
    assert first.usage.cache_creation.ephemeral_1h_input_tokens > 0 and first.usage.cache_read_input_tokens == 0
    assert second.usage.cache_read_input_tokens == first.usage.cache_creation_input_tokens


async def test_anthropic_realtime_over_the_rate_limit_is_a_429_with_retry_after(sim, claude):
    sim.config = SimConfig(seed=3, realtime_rpm=1)
    await claude.messages.create(model=MODEL, max_tokens=10, messages=[{"role": "user", "content": "a"}])
    with pytest.raises(anthropic.RateLimitError) as caught:
        await claude.messages.create(model=MODEL, max_tokens=10, messages=[{"role": "user", "content": "b"}])
    assert caught.value.response.headers["retry-after"] == "60"
    assert sim.stats["realtime_rate_limited"] == 1


async def test_openai_sdk_creates_a_chat_completion_with_rate_limit_headers(sim, oai):
    sim.config = SimConfig(seed=3, realtime_rpm=3)
    raw = await oai.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", max_tokens=50, messages=[{"role": "user", "content": "question"}])
    completion = raw.parse()
    assert completion.choices[0].message.content.startswith("answer:") and completion.usage.prompt_tokens > 0
    assert raw.headers["x-ratelimit-limit-requests"] == "3"
    assert raw.headers["x-ratelimit-remaining-requests"] == "2"


async def test_openai_realtime_over_the_rate_limit_is_a_rate_limit_error(sim, oai):
    sim.config = SimConfig(seed=3, realtime_rpm=1)
    await oai.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "a"}])
    with pytest.raises(openai.RateLimitError):
        await oai.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "b"}])
