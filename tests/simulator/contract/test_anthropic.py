"""The Anthropic SDK drives the simulator: batches, count_tokens, each error status as its exception."""

from __future__ import annotations

from typing import Any

import anthropic
import pytest

from .recorder import fail

MODEL = "claude-sonnet-4-5"


def message_request(cid: str, **extra: Any) -> dict:
    return {"custom_id": cid, "params": {"model": MODEL, "max_tokens": 300,
                                         "messages": [{"role": "user", "content": f"question {cid}"}], **extra}}


async def test_anthropic_batch_lifecycle_through_the_sdk(sim, claude, clock):
    created = [await claude.messages.batches.create(requests=[message_request(f"b{b}r{i}") for i in range(3)])
               for b in range(5)]
    assert all(b.processing_status == "in_progress" and b.request_counts.processing == 3 for b in created)
    ids = [b.id for b in created]
    forward = [b.id async for b in claude.messages.batches.list(limit=2)]
    assert forward == ids[::-1]
    first_page = await claude.messages.batches.list(limit=2, before_id=ids[1])
    assert [b.id for b in first_page.data] == [ids[3], ids[2]] and first_page.has_more
    backward = [b.id async for b in claude.messages.batches.list(limit=1, before_id=ids[2])]
    assert backward == [ids[3], ids[4]]
    clock.advance(4)
    canceling = await claude.messages.batches.cancel(ids[0])
    assert canceling.processing_status == "canceling" and canceling.cancel_initiated_at is not None
    clock.advance(6)
    ended = await claude.messages.batches.retrieve(ids[1])
    assert ended.processing_status == "ended" and ended.results_url and ended.ended_at
    results = {r.custom_id: r.result async for r in await claude.messages.batches.results(ids[1])}
    assert set(results) == {"b1r0", "b1r1", "b1r2"}
    assert all(r.type == "succeeded" and r.message.usage.service_tier == "batch" for r in results.values())
    canceled = sorted([r.result.type async for r in await claude.messages.batches.results(ids[0])])
    assert canceled == ["canceled", "canceled", "succeeded"]  # 1 of 3 processed when cancel came
    deleted = await claude.messages.batches.delete(ids[1])
    assert deleted.type == "message_batch_deleted"
    with pytest.raises(anthropic.NotFoundError):
        await claude.messages.batches.retrieve(ids[1])


async def test_anthropic_sdk_default_version_refuses_temperature_as_an_errored_result(sim, claude, recorder):
    batch = await claude.messages.batches.create(requests=[message_request("hot", temperature=0.5),
                                                           message_request("cool")])
    legacy = await claude.messages.batches.create(requests=[message_request("hot", temperature=0.5)],
                                                  extra_headers={"anthropic-version": "2023-06-01"})
    sim.clock.advance(10)
    got = {r.custom_id: r.result async for r in await claude.messages.batches.results(batch.id)}
    assert got["hot"].type == "errored" and got["hot"].error.error.type == "invalid_request_error"
    assert got["hot"].error.error.message == "temperature: Extra inputs are not permitted"
    assert got["cool"].type == "succeeded"
    assert [r.result.type async for r in await claude.messages.batches.results(legacy.id)] == ["succeeded"]
    sent = [m for m, p, *_ in recorder.seen if p == "/v1/messages/batches"]
    assert sent == ["POST", "POST"]


async def test_anthropic_count_tokens_matches_what_usage_bills_cache_included(sim, claude):
    system = [{"type": "text", "text": "你好，世界。" * 50 + "Be brief. " * 40,
               "cache_control": {"type": "ephemeral", "ttl": "1h"}}]
    params = {"model": MODEL, "max_tokens": 50, "system": system,
              "messages": [{"role": "user", "content": [{"type": "text", "text": "first question",
                                                         "cache_control": {"type": "ephemeral"}}]}]}
    counted = await claude.messages.count_tokens(model=MODEL, system=system, messages=params["messages"])
    batch = await claude.messages.batches.create(requests=[{"custom_id": "w", "params": params},
                                                           {"custom_id": "r", "params": params}])
    sim.clock.advance(10)
    usage = {x.custom_id: x.result.message.usage async for x in await claude.messages.batches.results(batch.id)}
    write, read = usage["w"], usage["r"]
    assert write.cache_creation.ephemeral_1h_input_tokens > 0 and write.cache_creation.ephemeral_5m_input_tokens > 0
    assert write.cache_creation_input_tokens == (write.cache_creation.ephemeral_1h_input_tokens
                                                 + write.cache_creation.ephemeral_5m_input_tokens)
    assert read.cache_read_input_tokens == write.cache_creation_input_tokens and read.cache_creation_input_tokens == 0
    for u in (write, read):
        assert u.input_tokens + u.cache_creation_input_tokens + u.cache_read_input_tokens == counted.input_tokens



ANTHROPIC_ERRORS = [
    ("400 empty requests", None, anthropic.BadRequestError, None),
    ("400 unknown version", None, anthropic.BadRequestError, "1999-01-01"),
    ("401", lambda sim: setattr(sim.config, "valid_keys", {"other"}), anthropic.AuthenticationError, None),
    ("402", lambda sim: setattr(sim.config, "billing_error", True), anthropic.PaymentRequiredError, None),
    ("409", fail("conflict_error"), anthropic.ConflictError, None),
    ("413", lambda sim: setattr(sim.config, "max_body_bytes", 100), anthropic.ContentTooLargeError, None),
    ("429", fail("rate_limit_error"), anthropic.RateLimitError, None),
    ("429 spend", lambda sim: setattr(sim.config, "spend_cap", 0), anthropic.EnforcedSpendLimitReachedError, None),
    ("429 queue", lambda sim: setattr(sim.config, "queue_limit", 1), anthropic.RateLimitError, None),
    ("500", fail("api_error"), anthropic.InternalServerError, None),
    ("504", fail("timeout_error"), anthropic.GatewayTimeoutError, None),
    ("529", fail("overloaded_error"), anthropic.OverloadedError, None),
    ("dropped", fail("dropped"), anthropic.APIConnectionError, None),
]


@pytest.mark.parametrize(("case", "setup", "exc_class", "version"), ANTHROPIC_ERRORS, ids=[c[0] for c in ANTHROPIC_ERRORS])
async def test_anthropic_error_statuses_raise_the_sdk_exception_class(sim, claude, case, setup, exc_class, version):
    if setup is not None:
        setup(sim)
    requests = [] if case.startswith("400 empty") else [message_request("a"), message_request("b")]
    headers = {"anthropic-version": version} if version else None
    with pytest.raises(exc_class) as caught:
        await claude.messages.batches.create(requests=requests, extra_headers=headers)
    err = caught.value
    assert type(err) is exc_class
    if case == "429 spend":
        assert err.error_code == "enforced_spend_limit_reached" and "retry-after" not in err.response.headers
        assert err.api_message.startswith("You have reached your specified API usage limits. You will regain access on ")
    if case in ("429", "429 queue"):
        assert err.response.headers["retry-after"] == "1" and err.error_code is None
        assert ("processing queue" in err.api_message) is (case == "429 queue")
    if case == "400 unknown version":
        assert err.api_message == 'anthropic-version: "1999-01-01" is not a valid version'
    assert sim.stats["creates"] == 0
