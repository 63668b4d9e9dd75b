"""`openai.AzureOpenAI` drives the simulator's Azure OpenAI on both surfaces: the dated one
(`/openai/...?api-version=`, the `api-key` header) and the v1 one (`/openai/v1/...`, the client Microsoft's
v1 samples build: `OpenAI(base_url=".../openai/v1/")`). Every answer is checked against the SDK's types."""

from __future__ import annotations

import openai
import orjson
import pytest

from .conftest import KEY

DEPLOYMENT = "gpt-4o-mini-batch"  # a Global-Batch deployment's name stands where OpenAI has a model
API_VERSION = "2024-10-21"


def lines(n: int, url: str = "/v1/chat/completions") -> bytes:
    return b"".join(orjson.dumps({"custom_id": f"c{i}", "method": "POST", "url": url,
                                  "body": {"model": DEPLOYMENT, "max_tokens": 20,
                                           "messages": [{"role": "user", "content": "question"}]}}) + b"\n"
                    for i in range(n))


@pytest.fixture
async def dated(sim, recorder):
    async with openai.AsyncAzureOpenAI(api_key=KEY, api_version=API_VERSION, azure_endpoint=sim.url, max_retries=0,
                                       http_client=recorder.client(openai)) as client:
        yield client
    recorder.assert_exact()


@pytest.fixture
async def v1(sim, recorder):
    async with openai.AsyncOpenAI(api_key=KEY, base_url=sim.url + "/openai/v1/", max_retries=0,
                                  http_client=recorder.client(openai)) as client:
        yield client
    recorder.assert_exact()


async def run_one_batch(client, recorder, clock, *, endpoint: str, url: str) -> None:
    uploaded = await client.files.create(file=("in.jsonl", lines(3, url)), purpose="batch")
    batch = await client.batches.create(input_file_id=uploaded.id, endpoint=endpoint, completion_window="24h",
                                        metadata={"job": "contract"})
    assert batch.status == "validating" and batch.endpoint == endpoint
    clock.advance(11)
    done = await client.batches.retrieve(batch.id)
    assert done.status == "completed" and done.request_counts.model_dump() == {"total": 3, "completed": 3, "failed": 0}
    assert done.error_file_id is not None  # Azure: a successful batch still has an error file, empty
    recorder.endpoints.update({done.output_file_id: "/v1/chat/completions",
                               done.error_file_id: "/v1/chat/completions"})
    output = (await client.files.content(done.output_file_id)).content.splitlines()
    assert sorted(orjson.loads(x)["custom_id"] for x in output) == ["c0", "c1", "c2"]
    assert (await client.files.content(done.error_file_id)).content == b""
    assert [b.id async for b in client.batches.list(limit=1)] == [batch.id]


async def test_the_dated_surface_through_azure_openai_with_the_api_key_header(sim, dated, recorder, clock):
    await run_one_batch(dated, recorder, clock, endpoint="/chat/completions", url="/chat/completions")
    calls = sim.stats["calls"]
    assert calls["azure.batches.create"] == 1 and calls["azure.batches.retrieve"] == 1
    assert sim.stats["creates"] == 1


async def test_the_v1_surface_through_the_openai_client(sim, v1, recorder, clock):
    await run_one_batch(v1, recorder, clock, endpoint="/v1/chat/completions", url="/v1/chat/completions")


async def test_lines_with_v1_urls_run_under_a_bare_endpoint(sim, v1, recorder, clock):
    """Azure's REST page creates with `/chat/completions` while its lines say `/v1/chat/completions`."""
    await run_one_batch(v1, recorder, clock, endpoint="/chat/completions", url="/v1/chat/completions")


async def test_a_file_over_the_request_limit_fails_the_batch(sim, v1, clock):
    sim.config.azure_max_requests = 2
    uploaded = await v1.files.create(file=("in.jsonl", lines(3)), purpose="batch")
    batch = await v1.batches.create(input_file_id=uploaded.id, endpoint="/chat/completions", completion_window="24h")
    clock.advance(11)
    failed = await v1.batches.retrieve(batch.id)
    assert failed.status == "failed" and failed.errors is not None
    assert "at most 2 allowed" in (failed.errors.data or [])[0].message


async def test_a_wrong_key_is_the_sdk_authentication_error(sim, dated):
    sim.config.valid_keys = {"other"}
    with pytest.raises(openai.AuthenticationError):
        await dated.batches.list()
