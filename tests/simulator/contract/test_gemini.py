"""The google-genai SDK drives the simulator's Gemini Batch Mode: every object it serves is one the SDK reads.

The SDK runs against the in-process simulator (`http_options` base_url and api_version, both the
`v1beta` of the reference and the `v1` google-genai 3.x calls by default): batches created inline and
from an uploaded file, read while pending and once done, listed, cancelled and deleted; the file uploaded
by the resumable protocol and the responses file downloaded.
"""

from __future__ import annotations

import io

import orjson
import pytest
from google import genai
from google.genai import errors as genai_errors
from google.genai import types

from batch_scheduler.simulator import SimConfig

# google-genai's async client subclasses aiohttp.ClientSession, which aiohttp warns about (not ours to fix)
pytestmark = pytest.mark.filterwarnings("ignore:Inheritance class AiohttpClientSession:DeprecationWarning")
MODEL = "gemini-2.5-flash"
KEY = "gemini-contract-key"


@pytest.fixture(params=["v1beta", "v1"])
def client(sim, request):
    return genai.Client(api_key=KEY, http_options=types.HttpOptions(base_url=sim.url, api_version=request.param))


def inlined(n: int) -> list[types.InlinedRequest]:
    return [types.InlinedRequest(contents=[types.Content(role="user", parts=[types.Part(text=f"q{i}")])],
                                 config=types.GenerateContentConfig(max_output_tokens=30),
                                 metadata={"key": f"k{i}"}) for i in range(n)]


async def test_an_inline_batch_is_read_pending_then_done_with_its_responses(client, clock):
    job = await client.aio.batches.create(model=MODEL, src=inlined(3), config={"display_name": "contract-inline"})
    assert job.name.startswith("batches/") and job.display_name == "contract-inline"
    assert job.state.name in ("JOB_STATE_PENDING", "JOB_STATE_RUNNING") and job.model == f"models/{MODEL}"
    clock.advance(11)
    done = await client.aio.batches.get(name=job.name)
    assert done.state == types.JobState.JOB_STATE_SUCCEEDED and done.end_time is not None
    responses = done.dest.inlined_responses
    assert sorted(r.metadata["key"] for r in responses) == ["k0", "k1", "k2"]
    for r in responses:
        assert r.error is None and r.response.text == "answer:" + r.metadata["key"]
        assert r.response.usage_metadata.candidates_token_count <= 30 and r.response.model_version == MODEL


async def test_a_file_batch_uploads_resumably_and_its_responses_file_downloads(client, clock):
    lines = b"".join(orjson.dumps({"key": f"f{i}", "request": {"contents": [{"role": "user", "parts": [{"text": "q"}]}]}})
                     + b"\n" for i in range(4))
    uploaded = await client.aio.files.upload(file=io.BytesIO(lines),
                                             config={"mime_type": "jsonl", "display_name": "contract-in"})
    assert uploaded.name.startswith("files/") and uploaded.size_bytes == len(lines)
    job = await client.aio.batches.create(model=MODEL, src=uploaded.name, config={"display_name": "contract-file"})
    clock.advance(11)
    done = await client.aio.batches.get(name=job.name)
    assert done.state == types.JobState.JOB_STATE_SUCCEEDED and done.dest.file_name.startswith("files/")
    data = await client.aio.files.download(file=done.dest.file_name)
    keys = sorted(orjson.loads(line)["key"] for line in data.splitlines())
    assert keys == ["f0", "f1", "f2", "f3"]


async def test_list_cancel_and_delete(client, clock):
    first = await client.aio.batches.create(model=MODEL, src=inlined(2), config={"display_name": "a"})
    second = await client.aio.batches.create(model=MODEL, src=inlined(2), config={"display_name": "b"})
    pager = await client.aio.batches.list(config={"page_size": 1})
    names = [job.name async for job in pager]
    assert names == [second.name, first.name]
    await client.aio.batches.cancel(name=first.name)
    clock.advance(1)
    assert (await client.aio.batches.get(name=first.name)).state == types.JobState.JOB_STATE_CANCELLED
    deleted = await client.aio.batches.delete(name=second.name)
    assert deleted.error is None
    with pytest.raises(genai_errors.ClientError) as exc:
        await client.aio.batches.get(name=second.name)
    assert exc.value.code == 404 and exc.value.status == "NOT_FOUND"


async def test_a_wrong_key_is_400_api_key_invalid_and_a_missing_one_403(sim):
    sim.config = SimConfig(valid_keys={KEY})
    wrong = genai.Client(api_key="nope", http_options=types.HttpOptions(base_url=sim.url, api_version="v1beta"))
    with pytest.raises(genai_errors.ClientError) as exc:
        await wrong.aio.batches.create(model=MODEL, src=inlined(1))
    assert exc.value.code == 400 and exc.value.status == "INVALID_ARGUMENT"
    assert exc.value.details["error"]["details"][0]["reason"] == "API_KEY_INVALID"
