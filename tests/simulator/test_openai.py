"""The simulator behaves like OpenAI's files + batches and the article's inline proxy."""

from __future__ import annotations

import zlib

import aiohttp
import orjson
import pytest

from .helpers import (
    BEARER,
    file_lines,
    get,
    inline_create,
    inline_requests,
    lines,
    openai_batch,
    openai_line,
)

# -- OpenAI ----------------------------------------------------------------------------------------


async def test_openai_flow_output_and_error_files(sim, http, clock):
    sim.config.processing_s = 10
    good = [openai_line(f"c{i}") for i in range(5)]
    bad = openai_line("bad", model="gpt-4o-mini")  # no messages: a 400 in the error file
    batch = await openai_batch(http, sim, [*good, bad])
    assert batch["id"].startswith("batch_") and batch["status"] == "validating"
    assert batch["metadata"] == {"job": "j1"}
    assert batch["request_counts"] == {"total": 0, "completed": 0, "failed": 0}  # not validated yet
    url = f"{sim.url}/v1/batches/{batch['id']}"
    _, validating = await get(http, url, headers=BEARER)
    assert validating["status"] == "validating" and validating["request_counts"]["total"] == 0
    clock.advance(1)
    _, polled = await get(http, url, headers=BEARER)
    assert polled["status"] == "in_progress" and polled["output_file_id"] is None
    assert polled["request_counts"]["total"] == 6
    clock.advance(8)
    _, finalizing = await get(http, url, headers=BEARER)
    assert finalizing["status"] == "finalizing" and finalizing["finalizing_at"]
    clock.advance(1)
    _, done = await get(http, url, headers=BEARER)
    assert done["status"] == "completed" and done["completed_at"]
    assert done["request_counts"] == {"total": 6, "completed": 5, "failed": 1}
    assert done["usage"]["input_tokens"] > 0 and done["usage"]["total_tokens"] == (
        done["usage"]["input_tokens"] + done["usage"]["output_tokens"])
    output = {x["custom_id"]: x for x in await file_lines(http, sim, done["output_file_id"])}
    assert set(output) == {f"c{i}" for i in range(5)}
    line = output["c3"]
    assert line["id"].startswith("batch_req_") and line["error"] is None
    body = line["response"]["body"]
    assert line["response"]["status_code"] == 200 and body["object"] == "chat.completion"
    assert body["choices"][0]["message"]["content"] == "answer:c3"
    usage = body["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert usage["completion_tokens"] == 16 + zlib.crc32(b"c3") % 64
    [error] = await file_lines(http, sim, done["error_file_id"])
    assert error["custom_id"] == "bad" and error["response"]["status_code"] == 400
    assert error["response"]["body"]["error"]["message"] == "Missing required parameter: 'messages'."
    _, described = await get(http, f"{sim.url}/v1/files/{done['error_file_id']}", headers=BEARER)
    assert described["bytes"] > 0 and described["purpose"] == "batch_output"


async def test_openai_expired_requests_land_in_the_error_file(sim, http):
    sim.config.expired_rate = 1.0
    batch = await openai_batch(http, sim, [openai_line(f"c{i}") for i in range(3)])
    _, done = await get(http, f"{sim.url}/v1/batches/{batch['id']}", headers=BEARER)
    assert done["status"] == "expired" and done["output_file_id"] is None
    errors = await file_lines(http, sim, done["error_file_id"])
    assert {x["custom_id"] for x in errors} == {"c0", "c1", "c2"}
    assert all(x["response"] is None and x["error"]["code"] == "batch_expired" for x in errors)


async def test_openai_batch_whose_every_request_failed_completes_without_output_file(sim, http):
    sim.config.errored_rate = 1.0
    batch = await openai_batch(http, sim, [openai_line(f"c{i}") for i in range(3)])
    _, done = await get(http, f"{sim.url}/v1/batches/{batch['id']}", headers=BEARER)
    assert done["status"] == "completed" and done["output_file_id"] is None and done["error_file_id"]
    errors = await file_lines(http, sim, done["error_file_id"])
    assert [x["response"]["status_code"] for x in errors] == [500] * 3


@pytest.mark.parametrize(("lines", "code"), [
    ([openai_line("a"), openai_line("b", url="/v1/embeddings")], "mismatched_endpoint"),
    ([openai_line("a"), openai_line("a")], "duplicate_custom_id"),
    ([openai_line("a"), "not an object"], "invalid_json_line"),
])
async def test_openai_invalid_input_file_fails_the_batch(sim, http, lines, code):
    batch = await openai_batch(http, sim, lines)
    _, failed = await get(http, f"{sim.url}/v1/batches/{batch['id']}", headers=BEARER)
    assert failed["status"] == "failed" and failed["errors"]["data"][0]["code"] == code
    assert failed["errors"]["data"][0]["line"] == 2


async def test_openai_over_50000_requests_fails_the_batch(sim, http):
    sim.config.openai_max_requests = 3
    batch = await openai_batch(http, sim, [openai_line(f"c{i}") for i in range(4)])
    _, failed = await get(http, f"{sim.url}/v1/batches/{batch['id']}", headers=BEARER)
    assert failed["status"] == "failed" and failed["errors"]["data"][0]["code"] == "too_many_requests"


async def test_openai_list_pages_newest_first_and_cancel(sim, http, clock):
    sim.config.processing_s = 100
    ids = [(await openai_batch(http, sim, [openai_line("a"), openai_line("b")]))["id"] for _ in range(3)]
    _, page = await get(http, f"{sim.url}/v1/batches?limit=2", headers=BEARER)
    assert page["object"] == "list" and [b["id"] for b in page["data"]] == ids[::-1][:2] and page["has_more"]
    _, page2 = await get(http, f"{sim.url}/v1/batches?limit=2&after={page['last_id']}", headers=BEARER)
    assert [b["id"] for b in page2["data"]] == [ids[0]] and not page2["has_more"]
    clock.advance(50)  # 1 of 2 processed
    async with http.post(f"{sim.url}/v1/batches/{ids[0]}/cancel", headers=BEARER) as r:
        assert orjson.loads(await r.read())["status"] == "cancelling"
    _, cancelled = await get(http, f"{sim.url}/v1/batches/{ids[0]}", headers=BEARER)
    assert cancelled["status"] == "cancelled"
    errors = await file_lines(http, sim, cancelled["error_file_id"])
    assert [x["error"]["code"] for x in errors] == ["batch_cancelled"]


async def test_openai_errors_have_the_openai_shape(sim, http):
    sim.config.valid_keys = {"other"}
    status, body = await get(http, f"{sim.url}/v1/batches", headers=BEARER)
    assert status == 401 and body["error"]["code"] == "invalid_api_key" and "type" in body["error"]


async def test_openai_upload_with_a_multipart_nested_in_a_field_is_a_400(sim, http):
    form = aiohttp.MultipartWriter("form-data")
    form.append("batch").set_content_disposition("form-data", name="purpose")
    nested = aiohttp.MultipartWriter("mixed")
    nested.append("{}")
    form.append(nested).set_content_disposition("form-data", name="file")
    async with http.post(f"{sim.url}/v1/files", data=form, headers={"authorization": BEARER["authorization"]}) as r:
        status, body = r.status, orjson.loads(await r.read())
    assert status == 400
    assert body["error"]["message"] == "expected a multipart/form-data body with purpose and file"


# -- inline proxy ------------------------------------------------------------------------------------


async def test_inline_flow(sim, http, clock):
    sim.config.processing_s = 10
    status, batch = await inline_create(http, sim, inline_requests(20))
    assert status == 200 and batch["id"].startswith("ibatch_") and batch["status"] == "in_progress"
    url = f"{sim.url}/v1/batches/{batch['id']}"
    clock.advance(5)
    _, half = await get(http, url, headers=BEARER)
    assert half["status"] == "in_progress" and half["progress"] == 50
    clock.advance(5)
    _, done = await get(http, url, headers=BEARER)
    assert done["status"] == "completed" and done["progress"] == 100
    got = await lines(http, url + "/results", headers=BEARER)
    assert sorted(x["custom_id"] for x in got) == sorted(f"i{i}" for i in range(20))
    assert all(x["result"]["message"]["content"][0]["text"] == "answer:" + x["custom_id"] for x in got)


async def test_inline_refuses_more_than_10000_requests(sim, http):
    status, body = await inline_create(http, sim, inline_requests(10_001))
    assert status == 400 and body["error"]["type"] == "batch_size_exceeded"
    status, _ = await inline_create(http, sim, inline_requests(10_000))
    assert status == 200


async def test_inline_refuses_system_naming_the_request(sim, http):
    reqs = inline_requests(3)
    reqs[2]["body"]["system"] = "be brief"
    status, body = await inline_create(http, sim, reqs)
    assert status == 400 and body["error"]["type"] == "invalid_request_error"
    assert body["error"]["message"].startswith("requests.2.body.system")
