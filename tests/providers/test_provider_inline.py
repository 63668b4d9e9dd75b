"""The article's inline proxy: URLs joined without doubling /v1, system folded, states, no list call."""

from __future__ import annotations

import orjson
import pytest
from aioresponses import aioresponses
from yarl import URL

from batch_scheduler.core import errors
from batch_scheduler.core.http import HttpClient
from batch_scheduler.core.settings import RetryPolicy, Settings
from batch_scheduler.providers import build_settings
from batch_scheduler.providers.anthropic.inline import InlineProvider
from batch_scheduler.providers.base import BatchState, Outcome

from ..conftest import KEY

BASE = "http://proxy.test/v1"  # the article's CLAUDE_BASE_URL ends in /v1
FAST = RetryPolicy(attempts=3, initial_wait_s=0.001, max_wait_s=0.002)


def settings(**changes) -> Settings:
    return Settings(**{"provider": "inline", "api_key": KEY, "base_url": BASE, "auth": "bearer", "retry": FAST,
                       **changes})


def client(s: Settings) -> HttpClient:
    return HttpClient(InlineProvider.headers(s), s.retry, secret=KEY)


def check(provider: InlineProvider, obj: dict) -> tuple[str | None, dict | None]:
    problem, out = provider.check_request(obj, orjson.dumps(obj))
    return problem, (orjson.loads(out) if out is not None else None)


async def test_create_posts_to_base_v1_batches_once_with_the_system_folded_into_the_first_user_message():
    s = settings(headers=(("Bypass-Middleware", "true"),))
    p = InlineProvider(s, None)
    obj = {"custom_id": "a", "params": {"model": "claude-sonnet-4-20250514", "max_tokens": 100, "system": "Be brief.",
                                        "messages": [{"role": "user", "content": "Summarise this."}]}}
    problem, line = p.check_request(obj, orjson.dumps(obj))
    assert problem is None
    async with client(s) as http:
        p.http = http
        with aioresponses() as m:
            m.post("http://proxy.test/v1/batches", payload={"id": "ib_1", "status": "in_progress"})
            info = await p.create([line], tag="chunk-1")
            call = m.requests[("POST", URL("http://proxy.test/v1/batches"))][0].kwargs
    assert info.id == "ib_1" and info.state is BatchState.IN_PROGRESS
    assert orjson.loads(call["data"]) == {"requests": [{
        "custom_id": "a", "method": "POST", "url": "/v1/messages",
        "body": {"model": "claude-sonnet-4-20250514", "max_tokens": 100,
                 "messages": [{"role": "user", "content": "Be brief.\n\nSummarise this."}]}}]}
    assert InlineProvider.headers(s) == {"content-type": "application/json", "authorization": f"Bearer {KEY}",
                                         "Bypass-Middleware": "true"}


def test_the_article_env_gives_bearer_auth_and_paths_without_a_doubled_v1():
    s = build_settings({"provider": "inline"}, {"CLAUDE_API_KEY": KEY, "CLAUDE_BASE_URL": "https://proxy.example/v1/",
                                                "CLAUDE_MODEL": "claude-sonnet-4-20250514"})
    p = InlineProvider(s, None)
    assert InlineProvider.headers(s)["authorization"] == f"Bearer {KEY}"
    assert p._create_url == "https://proxy.example/v1/batches"
    assert p._url_of(p._status_url, "ib_9") == "https://proxy.example/v1/batches/ib_9"
    assert p._url_of(p._results_url, "ib_9") == "https://proxy.example/v1/batches/ib_9/results"


async def test_configured_paths_are_used_for_status_and_results():
    s = settings(base_url="http://proxy.test", inline_status_path="/api/jobs/{id}",
                 inline_results_path="/api/jobs/{id}/output")
    ok = {"custom_id": "a", "result": {"type": "succeeded", "message": {"model": "m", "usage": {}}}}
    async with client(s) as http:
        p = InlineProvider(s, http)
        with aioresponses() as m:
            m.get("http://proxy.test/api/jobs/ib_1", payload={"id": "ib_1", "status": "completed", "progress": 100})
            m.get("http://proxy.test/api/jobs/ib_1/output", body=orjson.dumps(ok) + b"\n\n")
            info = await p.get("ib_1")
            lines = [line async for block in p.result_blocks(info) for line in block]
    assert info.state is BatchState.ENDED
    assert [p.classify(line)[:2] for line in lines] == [("a", Outcome.SUCCEEDED)]


def test_a_system_is_prepended_as_a_text_block_when_the_content_is_blocks():
    p = InlineProvider(settings(model="claude-haiku-4-5"), None)
    obj = {"custom_id": "a", "method": "POST", "url": "/v1/messages", "body": {
        "max_tokens": 10, "system": [{"type": "text", "text": "S1"}, {"type": "text", "text": "S2"}],
        "messages": [{"role": "assistant", "content": "x"}, {"role": "user", "content": [{"type": "text",
                                                                                          "text": "Q"}]}]}}
    problem, out = check(p, obj)
    assert problem is None
    assert out["body"] == {"model": "claude-haiku-4-5", "max_tokens": 10, "messages": [
        {"role": "assistant", "content": "x"},
        {"role": "user", "content": [{"type": "text", "text": "S1\n\nS2"}, {"type": "text", "text": "Q"}]}]}


def test_a_line_ready_for_the_proxy_is_sent_as_it_is():
    p = InlineProvider(settings(), None)
    raw = orjson.dumps({"custom_id": "a", "method": "POST", "url": "/v1/messages",
                        "body": {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}})
    assert p.check_request(orjson.loads(raw), raw) == (None, raw)


@pytest.mark.parametrize("obj, message", [
    ({"custom_id": "a", "method": "POST", "url": "/v1/chat/completions", "body": {}},
     "url '/v1/chat/completions': the inline proxy takes only /v1/messages"),
    ({"custom_id": "a", "params": {"model": "m", "max_tokens": 5}}, "params.messages missing"),
    ({"custom_id": "a", "body": {"max_tokens": 5, "messages": []}},
     "body.model missing (give --model or CLAUDE_MODEL to fill it)"),
    ({"custom_id": "a", "params": {"model": "m", "max_tokens": 5, "system": "s",
                                   "messages": [{"role": "assistant", "content": "x"}]}},
     "params.system given but no user message to fold it into"),
])
def test_a_bad_line_is_refused_naming_the_field(obj, message):
    problem, out = check(InlineProvider(settings(), None), obj)
    assert out is None and problem.startswith(message), problem


@pytest.mark.parametrize("doc, state", [
    ({"status": "in_progress", "progress": 40}, BatchState.IN_PROGRESS),
    ({"status": "completed", "progress": 100}, BatchState.ENDED),
    ({"status": "expired"}, BatchState.ENDED),
    ({"status": "failed", "request_counts": {"processing": 0, "succeeded": 3, "errored": 1}}, BatchState.ENDED),
    ({"status": "failed", "error": {"message": "upstream refused the batch"}}, BatchState.FAILED),
])
def test_statuses_map_to_states(doc, state):
    info = InlineProvider(settings(), None)._info({"id": "ib_1", **doc})
    assert info.state is state
    if state is BatchState.FAILED:
        assert info.error == "upstream refused the batch"


async def test_recent_yields_nothing_and_cancel_says_the_proxy_cannot():
    p = InlineProvider(settings(), None)  # neither touches HTTP
    assert [i async for i in p.recent(0)] == []
    with pytest.raises(errors.RequestRejected, match="the inline proxy has no cancel call: batch ib_1 runs"):
        await p.cancel("ib_1")
