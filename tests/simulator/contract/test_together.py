"""The `together` SDK drives the simulator's Together batch API (`/v1/files` purpose `batch-api`, `/v1/batches`):
every answer is checked against the together SDK's types (the `{"job": ...}` create answer, the bare list, the
batch object in capitals with ISO-8601 times). The upload goes as a plain multipart form, as the provider sends it
(the SDK's own upload takes a presigned redirect the simulator does not serve)."""

from __future__ import annotations

import httpx
import orjson
import pytest
import together
from together.types import BatchCreateResponse, BatchJob, FileDeleteResponse, FileResponse

from .conftest import KEY
from .recorder import Recorder

MODEL = "meta-llama/Llama-3.3-70B-Instruct-Turbo"
_ID = "[A-Za-z0-9_-]+"
TOGETHER_ROUTES = [
    ("GET", f"/v1/files/{_ID}", FileResponse, True),
    ("DELETE", f"/v1/files/{_ID}", FileDeleteResponse, True),
    ("GET", f"/v1/files/{_ID}/content", "jsonl:openai", False),
    ("POST", "/v1/batches", BatchCreateResponse, True),
    ("GET", "/v1/batches", list[BatchJob], True),
    ("GET", f"/v1/batches/{_ID}", BatchJob, True),
    ("POST", f"/v1/batches/{_ID}/cancel", BatchJob, True),
]


def lines(n: int) -> bytes:
    return b"".join(orjson.dumps({"custom_id": f"c{i}", "body": {"model": MODEL, "max_tokens": 20,
                                                                  "messages": [{"role": "user", "content": "q"}]}})
                    + b"\n" for i in range(n))


@pytest.fixture
def recorder() -> Recorder:
    return Recorder(TOGETHER_ROUTES)


@pytest.fixture
async def client(sim, recorder):
    async with together.AsyncTogether(api_key=KEY, base_url=sim.url, max_retries=0,
                                      http_client=recorder.client(together)) as c:
        yield c
    recorder.assert_exact()


async def upload(sim, n: int) -> str:
    async with httpx.AsyncClient(headers={"authorization": f"Bearer {KEY}"}, trust_env=False) as http:
        answer = await http.post(f"{sim.url}/v1/files", data={"purpose": "batch-api"},
                                 files={"file": ("in.jsonl", lines(n))})
    assert answer.status_code == 200, answer.text
    FileResponse.model_validate(answer.json())
    return answer.json()["id"]


async def test_a_batch_runs_from_create_to_results_through_the_together_client(sim, client, recorder, clock):
    file_id = await upload(sim, 3)
    assert (await client.files.retrieve(file_id)).purpose == "batch-api"
    created = await client.batches.create(input_file_id=file_id, endpoint="/v1/chat/completions", model_id=MODEL)
    assert created.job is not None and created.job.status == "VALIDATING" and created.job.id
    clock.advance(11)
    done = await client.batches.retrieve(created.job.id)
    assert done.status == "COMPLETED" and done.progress == 100.0 and done.completed_at is not None
    assert done.x_model_id == MODEL and done.output_file_id and done.error_file_id is None
    recorder.endpoints[done.output_file_id] = "/v1/chat/completions"
    output = (await (await client.files.content(done.output_file_id)).text()).splitlines()
    assert sorted(orjson.loads(x)["custom_id"] for x in output) == ["c0", "c1", "c2"]
    assert [b.id for b in await client.batches.list()] == [created.job.id]
    assert sim.store.batches[created.job.id].kind == "together"


async def test_a_cancelled_batch_ends_cancelled(sim, client, clock):
    sim.config.cancel_s = 5
    created = await client.batches.create(input_file_id=await upload(sim, 2), endpoint="/v1/chat/completions")
    assert created.job is not None and created.job.id
    clock.advance(2)
    assert (await client.batches.cancel(created.job.id)).status == "IN_PROGRESS"  # cancelling, as the SDK spells it
    clock.advance(6)
    assert (await client.batches.retrieve(created.job.id)).status == "CANCELLED"


async def test_a_file_over_the_request_limit_fails_the_batch_with_its_error(sim, client, clock):
    sim.config.together_max_requests = 2
    created = await client.batches.create(input_file_id=await upload(sim, 3), endpoint="/v1/chat/completions")
    assert created.job is not None and created.job.id
    clock.advance(11)
    failed = await client.batches.retrieve(created.job.id)
    assert failed.status == "FAILED" and "at most 2 allowed" in (failed.error or "")


async def test_lines_with_method_and_url_are_openai_s_not_together_s(sim, client):
    """The /v1 store holds both: a batch on a `batch` file is OpenAI's, and answers as OpenAI does."""
    async with httpx.AsyncClient(headers={"authorization": f"Bearer {KEY}"}, trust_env=False) as http:
        answer = await http.post(f"{sim.url}/v1/files", data={"purpose": "batch"},
                                 files={"file": ("in.jsonl", lines(1))})
        batch = await http.post(f"{sim.url}/v1/batches", json={"input_file_id": answer.json()["id"],
                                                               "endpoint": "/v1/chat/completions",
                                                               "completion_window": "24h"})
    assert batch.json()["status"] == "validating" and sim.store.batches[batch.json()["id"]].kind == "openai"


async def test_a_wrong_key_is_the_sdk_authentication_error(sim, client):
    sim.config.valid_keys = {"other"}
    with pytest.raises(together.AuthenticationError):
        await client.batches.list()
