"""The simulator behaves like the Anthropic Message Batches API it stands in for, faults included."""

from __future__ import annotations

import io
import time
import zlib

import aiohttp
import orjson
import pytest

from batch_scheduler.simulator import SimConfig
from batch_scheduler.simulator.process import SimulatorProcess

from .helpers import (
    BATCHES,
    BEARER,
    HEADERS,
    KEY,
    MODEL,
    create,
    get,
    lines,
    params,
    requests_for,
)

# -- Anthropic -------------------------------------------------------------------------------------


async def test_round_trip_answers_every_request_with_its_own_answer_and_usage(sim, http, clock):
    sim.config.processing_s = 10
    reqs = requests_for(50)
    reqs[3]["params"]["system"] = "be brief"
    status, batch = await create(http, sim, reqs)
    assert status == 200
    assert batch["id"].startswith("msgbatch_") and batch["type"] == "message_batch"
    assert batch["processing_status"] == "in_progress" and batch["results_url"] is None
    assert batch["request_counts"] == {"processing": 50, "succeeded": 0, "errored": 0, "canceled": 0,
                                       "expired": 0}
    url = f"{sim.url}{BATCHES}/{batch['id']}"
    status, body = await get(http, url + "/results")
    assert status == 400 and body["error"]["type"] == "invalid_request_error"

    clock.advance(10)
    _, ended = await get(http, url)
    assert ended["processing_status"] == "ended" and ended["ended_at"] is not None
    assert ended["request_counts"]["succeeded"] == 50 and ended["request_counts"]["processing"] == 0
    assert ended["results_url"] == url + "/results"
    got = {line["custom_id"]: line["result"] for line in await lines(http, ended["results_url"])}
    assert set(got) == {r["custom_id"] for r in reqs}
    for r in reqs:
        message = got[r["custom_id"]]["message"]
        assert message["content"] == [{"type": "text", "text": "answer:" + r["custom_id"], "citations": None}]
        assert message["model"] == MODEL
        in_tokens = (len(orjson.dumps(r["params"]["messages"])) + 3) // 4
        if "system" in r["params"]:
            in_tokens += (len(orjson.dumps(r["params"]["system"])) + 3) // 4
        assert message["usage"] == {
            "input_tokens": in_tokens, "output_tokens": 16 + zlib.crc32(r["custom_id"].encode()) % 64,
            "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0,
            "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 0},
            "service_tier": "batch"}
    assert sim.stats["creates"] == 1 and sim.stats["requests_created"] == 50


async def test_results_come_in_a_new_shuffled_order_each_download(sim, http):
    _, batch = await create(http, sim, requests_for(200))
    url = f"{sim.url}{BATCHES}/{batch['id']}/results"
    first = [line["custom_id"] for line in await lines(http, url)]
    second = [line["custom_id"] for line in await lines(http, url)]
    assert first != [r["custom_id"] for r in requests_for(200)]
    assert first != second and sorted(first) == sorted(second)


async def test_content_problems_come_back_as_errored_results_not_400(sim, http):
    reqs = [{"custom_id": "ok", "params": params()},
            {"custom_id": "no_max", "params": {"model": MODEL, "messages": []}}]
    status, batch = await create(http, sim, reqs)
    assert status == 200
    got = {x["custom_id"]: x["result"] for x in await lines(http, f"{sim.url}{BATCHES}/{batch['id']}/results")}
    assert got["no_max"] == {"type": "errored", "error": {"type": "error", "error": {
        "type": "invalid_request_error", "message": "max_tokens: Field required"}}}
    assert got["ok"]["type"] == "succeeded"


async def test_list_is_newest_first_and_pages_with_after_id(sim, http):
    ids = [(await create(http, sim, requests_for(1)))[1]["id"] for _ in range(5)]
    _, page1 = await get(http, f"{sim.url}{BATCHES}?limit=2")
    assert [b["id"] for b in page1["data"]] == ids[::-1][:2]
    assert page1["has_more"] and page1["first_id"] == ids[4] and page1["last_id"] == ids[3]
    _, page2 = await get(http, f"{sim.url}{BATCHES}?limit=2&after_id={page1['last_id']}")
    assert [b["id"] for b in page2["data"]] == [ids[2], ids[1]]
    _, page3 = await get(http, f"{sim.url}{BATCHES}?limit=2&after_id={page2['last_id']}")
    assert [b["id"] for b in page3["data"]] == [ids[0]] and not page3["has_more"]
    _, before = await get(http, f"{sim.url}{BATCHES}?limit=2&before_id={ids[1]}")
    assert [b["id"] for b in before["data"]] == [ids[3], ids[2]] and before["has_more"]
    status, _ = await get(http, f"{sim.url}{BATCHES}?limit=1001")
    assert status == 400


async def test_cancel_returns_unprocessed_requests_canceled(sim, http, clock):
    sim.config.processing_s = 100
    _, batch = await create(http, sim, requests_for(10))
    url = f"{sim.url}{BATCHES}/{batch['id']}"
    clock.advance(30)  # 3 of 10 processed
    async with http.post(url + "/cancel", headers=HEADERS) as r:
        canceling = orjson.loads(await r.read())
    assert canceling["processing_status"] == "canceling" and canceling["cancel_initiated_at"]
    _, ended = await get(http, url)
    assert ended["processing_status"] == "ended"
    assert ended["request_counts"] == {"processing": 0, "succeeded": 3, "errored": 0, "canceled": 7,
                                       "expired": 0}
    kinds = sorted(x["result"]["type"] for x in await lines(http, url + "/results"))
    assert kinds == ["canceled"] * 7 + ["succeeded"] * 3


async def test_delete_only_once_ended(sim, http, clock):
    sim.config.processing_s = 5
    _, batch = await create(http, sim, requests_for(1))
    url = f"{sim.url}{BATCHES}/{batch['id']}"
    async with http.delete(url, headers=HEADERS) as r:
        assert r.status == 400
    clock.advance(5)
    async with http.delete(url, headers=HEADERS) as r:
        assert orjson.loads(await r.read()) == {"id": batch["id"], "type": "message_batch_deleted"}
    status, body = await get(http, url)
    assert status == 404 and body["error"]["type"] == "not_found_error"


async def test_unknown_key_is_refused_until_valid_keys_change(sim, http):
    sim.config.valid_keys = {"other"}
    status, body = await create(http, sim, requests_for(1))
    assert status == 401 and body["type"] == "error"
    assert body["error"]["type"] == "authentication_error" and body["request_id"]
    status, _ = await create(http, sim, requests_for(1), headers={"anthropic-version": "2023-06-01"})
    assert status == 401
    sim.config.valid_keys = {KEY}
    status, _ = await create(http, sim, requests_for(1))
    assert status == 200
    status, _ = await create(http, sim, requests_for(1), headers={**BEARER, "anthropic-version": "2023-06-01"})
    assert status == 200
    assert sim.stats["creates"] == 2


async def test_missing_anthropic_version_is_400(sim, http):
    status, body = await create(http, sim, requests_for(1), headers={"x-api-key": KEY})
    assert status == 400 and "anthropic-version" in body["error"]["message"]


async def test_over_the_request_count_is_400_and_over_the_byte_limit_413(sim, http):
    sim.config.max_requests = 3
    status, body = await create(http, sim, requests_for(4))
    assert status == 400 and body["error"] == {
        "type": "invalid_request_error",
        "message": "requests: List should have at most 3 items after validation, not 4"}
    sim.config.max_requests = 100
    sim.config.max_body_bytes = 1000
    status, body = await create(http, sim, requests_for(20))
    assert status == 413 and body["error"]["type"] == "request_too_large"
    assert sim.stats["creates"] == 0


@pytest.mark.parametrize(("index", "change", "message"), [
    (3, {"custom_id": "has space"}, "requests.3.custom_id: String should match pattern"),
    (2, {"custom_id": "r0"}, "requests.2.custom_id: duplicate custom_id 'r0'"),
    (1, {"custom_id": "x" * 65}, "requests.1.custom_id: "),
    (4, {"params": None}, "requests.4.params: Field required"),
    (0, {"params": [1]}, "requests.0.params: Input should be a valid dictionary"),
])
async def test_bad_request_is_400_naming_it(sim, http, index, change, message):
    reqs = requests_for(10)
    reqs[index].update(change)
    status, body = await create(http, sim, reqs)
    assert status == 400 and body["error"]["type"] == "invalid_request_error"
    assert body["error"]["message"].startswith(message)
    assert sim.stats["creates"] == 0


@pytest.mark.parametrize("body", [b"not json", b'{"requests": []}', b'{"nothing": 1}', b"[]"])
async def test_create_without_requests_is_400(sim, http, body):
    async with http.post(sim.url + BATCHES, data=body, headers=HEADERS) as r:
        assert r.status == 400
        assert orjson.loads(await r.read())["error"]["type"] == "invalid_request_error"


async def test_queue_limit_gives_a_queue_full_429_with_whole_second_retry_after(sim, http, clock):
    sim.config.processing_s = 10
    sim.config.queue_limit = 5
    assert (await create(http, sim, requests_for(3)))[0] == 200
    async with http.post(sim.url + BATCHES, data=orjson.dumps({"requests": requests_for(3)}),
                         headers=HEADERS) as r:
        body = orjson.loads(await r.read())
        assert r.status == 429 and r.headers["retry-after"] == "1"
    assert body["error"]["type"] == "rate_limit_error"
    assert body["error"]["message"].startswith(
        "This request would exceed your organization's limit of 5 message batch requests in the processing "
        "queue (3 queued, 3 in this batch).")
    clock.advance(10)
    assert (await create(http, sim, requests_for(3)))[0] == 200
    assert sim.stats["queue_full"] == 1 and sim.stats["peak_queued_requests"] == 3


async def test_fault_mix_produces_every_documented_kind_and_creates_nothing(sim, http):
    sim.config.fail_rate = 1.0
    seen: dict[str, str | None] = {}
    for _ in range(80):
        try:
            async with http.post(sim.url + BATCHES, data=orjson.dumps({"requests": requests_for(2)}),
                                 headers=HEADERS) as r:
                body = orjson.loads(await r.read())
                seen[str(r.status)] = body["error"]["type"]
                assert r.headers.get("retry-after") == ("1" if r.status == 429 else None)
        except aiohttp.ClientError:
            seen["dropped"] = None
    assert seen == {"429": "rate_limit_error", "500": "api_error", "504": "timeout_error",
                    "409": "conflict_error", "529": "overloaded_error", "dropped": None}
    assert sim.stats["creates"] == 0
    assert sum(sim.stats["faults"].values()) == 80
    assert set(sim.stats["faults"]) == {"rate_limit_error", "api_error", "timeout_error", "conflict_error",
                                        "overloaded_error", "dropped"}


async def test_openai_paths_never_answer_529(sim, http):
    sim.config.fail_rate = 1.0
    statuses = set()
    for _ in range(80):
        try:
            async with http.get(f"{sim.url}/v1/batches", headers=BEARER) as r:
                body = orjson.loads(await r.read())
                statuses.add(r.status)
                assert set(body["error"]) == {"message", "type", "param", "code"}
        except aiohttp.ClientError:
            statuses.add("dropped")
    assert statuses == {429, 500, 503, 504, 409, "dropped"}


async def test_result_rates_draw_each_outcome_the_same_on_every_download(sim, http):
    sim.config.errored_rate = 0.2
    sim.config.invalid_rate = 0.1
    sim.config.expired_rate = 0.1
    _, batch = await create(http, sim, requests_for(500))
    url = f"{sim.url}{BATCHES}/{batch['id']}/results"
    first = {x["custom_id"]: x["result"] for x in await lines(http, url)}
    second = {x["custom_id"]: x["result"] for x in await lines(http, url)}
    assert first == second
    kinds = {r["error"]["error"]["type"] if r["type"] == "errored" else r["type"] for r in first.values()}
    assert kinds == {"succeeded", "expired", "api_error", "overloaded_error", "invalid_request_error"}
    _, ended = await get(http, f"{sim.url}{BATCHES}/{batch['id']}")
    counts = ended["request_counts"]
    assert counts["errored"] == sum(r["type"] == "errored" for r in first.values())
    assert counts["expired"] == sum(r["type"] == "expired" for r in first.values())


async def test_cut_download_fails_on_the_client_and_the_next_one_is_whole(sim, http):
    _, batch = await create(http, sim, requests_for(3000))
    url = f"{sim.url}{BATCHES}/{batch['id']}/results"
    sim.config.cut_rate = 1.0
    with pytest.raises(aiohttp.ClientPayloadError):
        async with http.get(url, headers=HEADERS) as r:
            assert r.status == 200
            await r.read()
    sim.config.cut_rate = 0.0
    got = await lines(http, url)
    assert len(got) == 3000 and len({x["custom_id"] for x in got}) == 3000
    assert sim.stats["cut_downloads"] == 1 and sim.stats["results_downloads"] == 2


async def test_lost_create_creates_a_batch_the_client_never_hears_of(sim, http):
    sim.config.lost_create_rate = 1.0
    with pytest.raises(aiohttp.ClientError):
        await create(http, sim, requests_for(4))
    sim.config.lost_create_rate = 0.0
    _, page = await get(http, f"{sim.url}{BATCHES}")
    assert len(page["data"]) == 1 and page["data"][0]["request_counts"]["succeeded"] == 4
    assert sim.stats["lost_creates"] == 1 and sim.stats["requests_created"] == 4


async def test_sim_endpoints_need_no_key_and_set_config(sim, http):
    sim.config.valid_keys = {"k1"}
    async with http.post(sim.url + "/_sim/config", json={"valid_keys": ["k2"], "fail_rate": 0}) as r:
        assert r.status == 200
    assert sim.config.valid_keys == {"k2"}
    async with http.post(sim.url + "/_sim/config", json={"no_such_field": 1}) as r:
        assert r.status == 400
    status, stats = await get(http, sim.url + "/_sim/stats", headers={})
    assert status == 200 and stats["creates"] == 0


async def test_10k_request_create_is_fast(sim, http):
    body = orjson.dumps({"requests": requests_for(10_000)})
    started = time.perf_counter()
    async with http.post(sim.url + BATCHES, data=io.BytesIO(body), headers=HEADERS) as r:
        assert r.status == 200
    assert time.perf_counter() - started < 1.0  # well under 0.1 s on a quiet machine


# -- the simulator in its own process -----------------------------------------------------------


async def test_simulator_process_serves_stats_and_stops():
    async with SimulatorProcess(["--seed", "1", "--keys", "a,b"]) as proc:
        assert proc.url.startswith("http://127.0.0.1:") and proc.pid
        assert proc.stats()["creates"] == 0
        async with aiohttp.ClientSession() as http:
            async with http.get(proc.url + BATCHES, headers={**HEADERS, "x-api-key": "a"}) as r:
                assert r.status == 200
            assert proc.set_config(valid_keys={"c"})["valid_keys"] == ["c"]
            async with http.get(proc.url + BATCHES, headers={**HEADERS, "x-api-key": "a"}) as r:
                assert r.status == 401
        assert proc.stats()["calls"] == {"anthropic.list": 2}
    assert proc.proc.returncode == 0


def test_simulator_process_sync_context_manager():
    with SimulatorProcess([]) as proc:
        assert proc.stats()["calls"] == {}
    assert proc.proc.returncode == 0


# -- command line ------------------------------------------------------------------------------------


def test_faults_flag_turns_every_fault_on_and_explicit_rates_win():
    import argparse

    from batch_scheduler.simulator import add_arguments
    from batch_scheduler.simulator.cli import config_from

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--faults", "--cut-rate", "0", "--keys", "a, b", "--seed", "3"])
    assert (args.host, args.port) == ("127.0.0.1", 8080)
    config = config_from(args)
    preset = SimConfig.all_faults()
    assert (preset.fail_rate, preset.errored_rate, preset.expired_rate, preset.cut_rate,
            preset.lost_create_rate) == (0.05, 0.03, 0.01, 0.10, 0.02)
    assert "conflict_error" not in preset.fail_kinds and preset.ghost_404_s == 0
    assert config == SimConfig.real_faults(cut_rate=0.0, valid_keys={"a", "b"}, seed=3)
    assert (config.ghost_404_s, config.missing_rate, config.request_timeout_rate, config.spend_cap,
            config.fail_kinds) == (1.0, 0.005, 0.01, None, None)
    assert config.fail_rate == 0.05 and config.cut_rate == 0.0
    assert config.valid_keys == {"a", "b"} and config.seed == 3
    assert config_from(parser.parse_args([])) == SimConfig()
