"""The `groq` SDK drives the simulator's Groq batch API (`{simulator}/groq/openai/v1/...`): every answer is checked against
the groq SDK's types, and the list's cursor paging (the reference's `paging.next_cursor`) is walked."""

from __future__ import annotations

import groq
import orjson
import pydantic
import pytest
from groq.types import (
    BatchCancelResponse,
    BatchCreateResponse,
    BatchRetrieveResponse,
    FileCreateResponse,
    FileDeleteResponse,
    FileInfoResponse,
)
from groq.types.batch_list_response import Data

from batch_scheduler.simulator.openai.groq import HOST

from .conftest import KEY
from .recorder import Recorder

MODEL = "llama-3.1-8b-instant"
_ID = "[A-Za-z0-9_-]+"


class Paging(pydantic.BaseModel):
    next_cursor: str | None


class GroqPage(pydantic.BaseModel):
    """Groq's list: the SDK's `data` and `object`, and the reference's `paging`."""

    object: str
    data: list[Data]
    paging: Paging


GROQ_ROUTES = [  # paths as the recorder names them (/groq/openai/v1/... -> /v1/...)
    ("POST", "/v1/files", FileCreateResponse, True),
    ("GET", f"/v1/files/{_ID}", FileInfoResponse, True),
    ("DELETE", f"/v1/files/{_ID}", FileDeleteResponse, True),
    ("GET", f"/v1/files/{_ID}/content", "jsonl:openai", False),
    ("POST", "/v1/batches", BatchCreateResponse, True),
    ("GET", "/v1/batches", GroqPage, True),
    ("GET", f"/v1/batches/{_ID}", BatchRetrieveResponse, True),
    ("POST", f"/v1/batches/{_ID}/cancel", BatchCancelResponse, True),
]


def lines(n: int) -> bytes:
    return b"".join(orjson.dumps({"custom_id": f"c{i}", "method": "POST", "url": "/v1/chat/completions",
                                  "body": {"model": MODEL, "max_tokens": 20,
                                           "messages": [{"role": "user", "content": "question"}]}}) + b"\n"
                    for i in range(n))


@pytest.fixture
def recorder() -> Recorder:
    return Recorder(GROQ_ROUTES)


@pytest.fixture
async def client(sim, recorder):
    async with groq.AsyncGroq(api_key=KEY, base_url=sim.url + HOST, max_retries=0,
                              http_client=recorder.client(groq)) as c:
        yield c
    recorder.assert_exact()


async def test_a_batch_runs_from_upload_to_results_through_the_groq_client(sim, client, recorder, clock):
    uploaded = await client.files.create(file=("in.jsonl", lines(3)), purpose="batch")
    assert (await client.files.info(uploaded.id)).filename == "in.jsonl"
    batch = await client.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions",
                                        completion_window="7d", metadata={"job": "contract"})
    assert batch.status == "validating" and batch.completion_window == "7d"
    clock.advance(11)
    done = await client.batches.retrieve(batch.id)
    assert done.status == "completed" and done.request_counts is not None and done.request_counts.total == 3
    assert done.output_file_id is not None and done.error_file_id is None
    recorder.endpoints[done.output_file_id] = "/v1/chat/completions"
    output = (await (await client.files.content(done.output_file_id)).text()).splitlines()
    assert sorted(orjson.loads(x)["custom_id"] for x in output) == ["c0", "c1", "c2"]
    assert (await client.files.delete(uploaded.id)).deleted
    assert sim.stats["calls"]["groq.batches.create"] == 1


async def test_the_list_pages_by_cursor_until_no_next_cursor(sim, client, recorder):
    uploaded = await client.files.create(file=("in.jsonl", lines(1)), purpose="batch")
    made = [(await client.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions",
                                         completion_window="24h")).id for _ in range(3)]
    listed = await client.batches.list()
    assert [b.id for b in listed.data] == made[::-1]
    first = await client.batches.with_raw_response.list(extra_query={"limit": 2})
    page = orjson.loads(await first.http_response.aread())
    assert [b["id"] for b in page["data"]] == made[:0:-1] and page["paging"]["next_cursor"] == made[1]
    rest = await client.batches.list(extra_query={"limit": 2, "cursor": page["paging"]["next_cursor"]})
    assert [b.id for b in rest.data] == made[:1]


async def test_a_failed_batch_carries_errors_as_an_object_and_as_an_array_under_the_fault(sim, client, recorder,
                                                                                          clock):
    sim.config.groq_max_requests = 2
    uploaded = await client.files.create(file=("in.jsonl", lines(3)), purpose="batch")
    batch = await client.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions",
                                        completion_window="24h")
    clock.advance(11)
    failed = await client.batches.retrieve(batch.id)
    assert failed.status == "failed" and failed.errors is not None
    assert "at most 2 allowed" in str((failed.errors.data or [])[0].message)
    sim.config.groq_variants = True
    raw = await client.batches.with_raw_response.retrieve(batch.id)
    assert isinstance(orjson.loads(await raw.http_response.aread())["errors"], list)
    assert recorder.seen.pop()[1].endswith(batch.id)  # the guide's array is what the SDK's types refuse


async def test_a_completion_window_past_7d_is_refused(sim, client):
    uploaded = await client.files.create(file=("in.jsonl", lines(1)), purpose="batch")
    with pytest.raises(groq.BadRequestError, match="between '24h' and '7d'"):
        await client.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions",
                                    completion_window="8d")


async def test_a_wrong_key_is_the_sdk_authentication_error(sim, client):
    sim.config.valid_keys = {"other"}
    with pytest.raises(groq.AuthenticationError):
        await client.batches.list()
