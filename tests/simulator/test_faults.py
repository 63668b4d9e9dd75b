"""What each fault and limit of the simulator does, seen from the wire; versions and token counts."""

from __future__ import annotations

import aiohttp
import orjson
import pytest

from batch_scheduler.simulator import SimConfig, Simulator
from batch_scheduler.simulator.counting import text_tokens

from .helpers import (
    BATCHES,
    BEARER,
    HEADERS,
    MODEL,
    FakeClock,
    create,
    file_lines,
    get,
    lines,
    openai_batch,
    openai_line,
    params,
    requests_for,
    upload,
)

# -- ghost 404s -------------------------------------------------------------------------------------


async def test_ghost_404_answers_retrieve_and_results_like_an_unknown_id_then_recovers(sim, http, clock):
    sim.config.ghost_404_s = 1.0
    _, batch = await create(http, sim, requests_for(3))
    url = f"{sim.url}{BATCHES}/{batch['id']}"
    status, body = await get(http, url)
    assert status == 404 and body["error"] == {"type": "not_found_error",
                                               "message": f"no message batch with id '{batch['id']}'"}
    assert (await get(http, url + "/results"))[0] == 404
    _, page = await get(http, f"{sim.url}{BATCHES}")
    assert [b["id"] for b in page["data"]] == [batch["id"]]  # list still shows it
    clock.advance(1.0)
    status, ended = await get(http, url)
    assert status == 200 and ended["processing_status"] == "ended"
    assert len(await lines(http, url + "/results")) == 3
    assert sim.stats["ghost_404s"] == 2


async def test_ghost_404_on_openai_batches(sim, http, clock):
    sim.config.ghost_404_s = 2.0
    batch = await openai_batch(http, sim, [openai_line("a")])
    status, body = await get(http, f"{sim.url}/v1/batches/{batch['id']}", headers=BEARER)
    assert status == 404 and body["error"]["message"] == f"No batch found with id '{batch['id']}'."
    clock.advance(2.0)
    assert (await get(http, f"{sim.url}/v1/batches/{batch['id']}", headers=BEARER))[0] == 200


# -- missing results and request timeouts ------------------------------------------------------------


async def test_missing_requests_are_absent_from_every_download_while_counted_as_answered(sim, http):
    sim.config.missing_rate = 0.05
    _, batch = await create(http, sim, requests_for(1000))
    url = f"{sim.url}{BATCHES}/{batch['id']}"
    first = {x["custom_id"] for x in await lines(http, url + "/results")}
    second = {x["custom_id"] for x in await lines(http, url + "/results")}
    missing = sim.stats["missing_results"]
    assert first == second and len(first) == 1000 - missing and 20 < missing < 80
    _, ended = await get(http, url)
    assert ended["request_counts"]["succeeded"] == 1000  # the provider believes it answered them all


async def test_missing_requests_are_seeded(http):
    got = []
    for _ in range(2):
        async with Simulator(SimConfig(seed=42, missing_rate=0.1)) as s:
            _, batch = await create(http, s, requests_for(200))
            got.append({x["custom_id"] for x in await lines(http, f"{s.url}{BATCHES}/{batch['id']}/results")})
    assert got[0] == got[1] and len(got[0]) < 200


async def test_openai_missing_requests_are_in_neither_file(sim, http):
    sim.config.missing_rate = 0.2
    sim.config.invalid_rate = 0.3
    batch = await openai_batch(http, sim, [openai_line(f"c{i}") for i in range(200)])
    _, done = await get(http, f"{sim.url}/v1/batches/{batch['id']}", headers=BEARER)
    seen = [x["custom_id"] for f in ("output_file_id", "error_file_id") for x in await file_lines(http, sim, done[f])]
    assert len(seen) == len(set(seen)) == 200 - sim.stats["missing_results"]
    assert done["request_counts"]["total"] == 200


async def test_openai_request_timeouts_are_error_file_lines(sim, http):
    sim.config.request_timeout_rate = 1.0
    batch = await openai_batch(http, sim, [openai_line(f"c{i}") for i in range(4)])
    _, done = await get(http, f"{sim.url}/v1/batches/{batch['id']}", headers=BEARER)
    assert done["status"] == "completed" and done["output_file_id"] is None
    assert done["request_counts"] == {"total": 4, "completed": 0, "failed": 4}
    errors = await file_lines(http, sim, done["error_file_id"])
    assert {x["error"]["code"] for x in errors} == {"request_timeout"} and all(x["response"] is None for x in errors)
    assert sim.stats["request_timeouts"] == 4


# -- spend, billing, queue and token limits ---------------------------------------------------------


async def test_spend_cap_gives_the_spend_limit_429_without_retry_after(sim, http):
    sim.config.spend_cap = 5
    assert (await create(http, sim, requests_for(3)))[0] == 200
    assert (await create(http, sim, requests_for(3, "s")))[0] == 200  # 3 < 5 when it came
    async with http.post(sim.url + BATCHES, data=orjson.dumps({"requests": requests_for(1, "t")}),
                         headers=HEADERS) as r:
        body = orjson.loads(await r.read())
        assert r.status == 429 and "retry-after" not in r.headers
    error = body["error"]
    assert error["type"] == "rate_limit_error" and error["details"] == {"error_code": "enforced_spend_limit_reached"}
    assert error["message"].startswith("You have reached your specified API usage limits. You will regain access on ")
    assert error["message"].endswith(" at 00:00 UTC.")
    assert sim.stats["spend_limited"] == 1 and sim.stats["requests_created"] == 6


async def test_openai_spend_cap_is_insufficient_quota(sim, http):
    sim.config.spend_cap = 0
    file_id = await upload(http, sim, [openai_line("a")])
    async with http.post(sim.url + "/v1/batches", json={"input_file_id": file_id, "completion_window": "24h",
                                                        "endpoint": "/v1/chat/completions"}, headers=BEARER) as r:
        body = orjson.loads(await r.read())
    assert r.status == 429 and body["error"]["code"] == "insufficient_quota"


async def test_billing_error_is_402_on_every_call(sim, http):
    sim.config.billing_error = True
    status, body = await get(http, f"{sim.url}{BATCHES}")
    assert status == 402 and body["error"]["type"] == "billing_error"
    assert body["error"]["message"].startswith("Your credit balance is too low")
    assert sim.stats["billing_errors"] == 1


async def test_enqueued_token_limit_is_per_model(sim, http, clock):
    sim.config.processing_s = 10
    sim.config.enqueued_token_limits = {"gpt-4o-mini": 25}
    first = await openai_batch(http, sim, [openai_line(f"a{i}") for i in range(2)])
    second = await openai_batch(http, sim, [openai_line(f"b{i}") for i in range(2)])
    other = await openai_batch(http, sim, [openai_line(f"c{i}", model="gpt-4.1", max_tokens=5,
                                                       messages=[{"role": "user", "content": "x"}])
                                           for i in range(50)])
    clock.advance(1)
    states = [(await get(http, f"{sim.url}/v1/batches/{b['id']}", headers=BEARER))[1]["status"]
              for b in (first, second, other)]
    assert states == ["in_progress", "failed", "in_progress"]
    assert sim.stats["peak_enqueued_tokens_by_model"]["gpt-4o-mini"] <= 25
    clock.advance(9)  # the first ended: its tokens are free again
    assert (await openai_batch(http, sim, [openai_line("d0")]))["status"] == "validating"
    clock.advance(1)
    assert sim.stats["token_limit_failures"] == 1


# -- time: batch durations ----------------------------------------------------------------------------


async def test_batch_duration_does_not_grow_with_size_and_jitters(http):
    clock = FakeClock()
    async with Simulator(SimConfig(seed=5, processing_s=10, processing_jitter=0.5), clock=clock) as s:
        batches = [(await create(http, s, requests_for(n, f"n{n}x")))[1] for n in (1, 10, 1000, 5000)]
        durations = {}
        for step in range(1, 31):
            clock.advance(0.5)
            for b in batches:
                _, doc = await get(http, f"{s.url}{BATCHES}/{b['id']}")
                if doc["processing_status"] == "ended":
                    durations.setdefault(b["id"], step * 0.5)
        assert len(durations) == 4 and all(5.0 <= d <= 15.5 for d in durations.values())
        assert len(set(durations.values())) > 1  # jittered, not one fixed time
        assert s.stats["peak_queued_requests"] == 6011


# -- versions -----------------------------------------------------------------------------------------


async def _results(http, sim, reqs, version):
    _, batch = await create(http, sim, reqs, headers={**HEADERS, "anthropic-version": version})
    assert batch["processing_status"] == "in_progress"
    return {x["custom_id"]: x["result"] for x in await lines(http, f"{sim.url}{BATCHES}/{batch['id']}/results")}


def _error(result) -> str | None:
    return result["error"]["error"]["message"] if result["type"] == "errored" else None


@pytest.mark.parametrize(("version", "change", "problem"), [
    ("2023-06-01", {"temperature": 1.5}, "temperature: Input should be less than or equal to 1"),
    ("2023-06-01", {"temperature": 0.5}, None),
    ("2023-06-01", {"top_k": -1}, "top_k: Input should be greater than or equal to 0"),
    ("2023-06-01", {"max_tokens": 0}, "max_tokens: Input should be greater than or equal to 1"),
    ("2023-06-01", {"stream": True}, "stream: streaming is not supported in the Message Batches API"),
    ("2026-10-21", {"temperature": 0.5}, "temperature: Extra inputs are not permitted"),
    ("2026-10-21", {"top_p": 0.9}, "top_p: Extra inputs are not permitted"),
    ("2026-10-21", {"max_tokens": 0}, None),
    ("2026-10-21", {"messages": []}, "messages: at least one message is required"),
])
async def test_params_are_checked_per_version_while_processing(sim, http, version, change, problem):
    got = await _results(http, sim, [{"custom_id": "x", "params": {**params(), **change}},
                                     {"custom_id": "ok", "params": params()}], version)
    assert _error(got["x"]) == problem and got["ok"]["type"] == "succeeded"
    if problem:
        assert got["x"]["error"]["error"]["type"] == "invalid_request_error"


@pytest.mark.parametrize("version", ["1999-01-01", "2023-06-01, 2023-06-01", "2024-10-22"])
async def test_unknown_anthropic_version_is_refused_on_every_call(sim, http, version):
    headers = {**HEADERS, "anthropic-version": version}
    for status, body in [await create(http, sim, requests_for(1), headers=headers),
                         await get(http, f"{sim.url}{BATCHES}", headers=headers)]:
        assert status == 400 and body["error"] == {
            "type": "invalid_request_error", "message": f'anthropic-version: "{version}" is not a valid version'}
    assert sim.stats["creates"] == 0


async def test_params_at_create_answers_400_naming_the_request(sim, http):
    sim.config.params_at_create = True
    reqs = requests_for(4)
    reqs[2]["params"]["temperature"] = 3
    status, body = await create(http, sim, reqs)
    assert status == 400 and body["error"]["message"] == (
        "requests.2.params.temperature: Input should be less than or equal to 1")


# -- token counts -------------------------------------------------------------------------------------


def test_cjk_counts_a_token_per_character_latin_four_characters():
    assert text_tokens("abcd" * 100) == 100
    assert text_tokens("你好世界" * 100) == 400
    assert text_tokens("東京は晴れ, sunny") == 5 + (len(", sunny") + 3) // 4


@pytest.mark.parametrize("text", ["Summarise this article. " * 40, "请总结这篇文章。" * 60])
async def test_count_tokens_is_what_usage_bills(sim, http, text):
    body = {"model": MODEL, "messages": [{"role": "user", "content": text}], "system": "简洁 / brief"}
    async with http.post(sim.url + "/v1/messages/count_tokens", json=body, headers=HEADERS) as r:
        counted = orjson.loads(await r.read())
    assert list(counted) == ["input_tokens"]
    got = await _results(http, sim, [{"custom_id": "c", "params": {**body, "max_tokens": 10}}], "2023-06-01")
    assert got["c"]["message"]["usage"]["input_tokens"] == counted["input_tokens"]
    chars = len(text)
    assert counted["input_tokens"] >= (chars if "请" in text else chars // 4)
    assert sim.stats["count_tokens"] == 1 and sim.stats["creates"] == 1


async def test_count_tokens_refuses_a_body_without_messages(sim, http):
    async with http.post(sim.url + "/v1/messages/count_tokens", json={"model": MODEL}, headers=HEADERS) as r:
        assert r.status == 400 and orjson.loads(await r.read())["error"]["message"] == "messages: Field required"


async def test_cache_reads_follow_writes_until_the_ttl_ends(sim, http, clock):
    system = [{"type": "text", "text": "Long shared context. " * 100, "cache_control": {"type": "ephemeral"}}]
    reqs = [{"custom_id": f"c{i}", "params": {**params(f"q{i}"), "system": system}} for i in range(3)]
    got = await _results(http, sim, reqs, "2023-06-01")
    usage = sorted((r["message"]["usage"] for r in got.values()), key=lambda u: -u["cache_creation_input_tokens"])
    assert usage[0]["cache_creation"]["ephemeral_5m_input_tokens"] > 0 and usage[0]["cache_read_input_tokens"] == 0
    assert all(u["cache_read_input_tokens"] == usage[0]["cache_creation_input_tokens"] for u in usage[1:])
    clock.advance(301)  # past the 5-minute TTL: written again
    again = await _results(http, sim, reqs[:1], "2023-06-01")
    assert again["c0"]["message"]["usage"]["cache_creation_input_tokens"] > 0
    tokens = sim.stats["tokens"]
    assert tokens["cache_write_5m"] == 2 * usage[0]["cache_creation_input_tokens"] and tokens["cache_write_1h"] == 0


@pytest.mark.parametrize("where", ["tools", "system", "content", "top"])
async def test_a_cache_mark_is_read_wherever_the_api_reads_it_and_a_mention_in_text_is_not_one(sim, http, where):
    text = "Long shared context. " * 100
    mark = {"type": "ephemeral"}
    p = {**params("q"), "system": text + ' "cache_control"'}  # the text names it: no mark
    if where == "tools":
        p["tools"] = [{"name": "t", "description": text, "input_schema": {}, "cache_control": mark}]
    elif where == "system":
        p["system"] = [{"type": "text", "text": text, "cache_control": mark}]
    elif where == "content":
        p["messages"] = [{"role": "user", "content": [{"type": "text", "text": text, "cache_control": mark}]}]
    else:
        p["cache_control"] = mark
    plain = {**params("q"), "system": text + ' "cache_control"', "messages": [{"role": "user", "content": "cache_control"}]}
    got = await _results(http, sim, [{"custom_id": "marked", "params": p}, {"custom_id": "plain", "params": plain}],
                         "2023-06-01")
    assert got["marked"]["message"]["usage"]["cache_creation_input_tokens"] > 0
    assert got["plain"]["message"]["usage"]["cache_creation_input_tokens"] == 0


# -- /_sim/config ----------------------------------------------------------------------------------------


async def test_every_new_fault_is_a_sim_config_field(sim, http):
    fields = {"ghost_404_s": 1.5, "missing_rate": 0.01, "request_timeout_rate": 0.02, "spend_cap": 10,
              "fail_kinds": ["conflict_error", "timeout_error"], "processing_jitter": 0.5,
              "enqueued_token_limit": 1000, "enqueued_token_limits": {"gpt-4o": 5}, "billing_error": False,
              "params_at_create": True, "retry_after_s": 2}
    async with http.post(sim.url + "/_sim/config", json=fields) as r:
        doc = orjson.loads(await r.read())
    assert {k: doc[k] for k in fields} == fields
    assert sim.config.token_limit("gpt-4o") == 5 and sim.config.token_limit("gpt-4o-mini") == 1000
    sim.config.fail_rate = 1.0
    kinds = set()
    for _ in range(30):
        try:
            status, _ = await get(http, f"{sim.url}{BATCHES}")
            kinds.add(status)
        except aiohttp.ClientError:
            kinds.add("dropped")
    assert kinds == {409, 504}
