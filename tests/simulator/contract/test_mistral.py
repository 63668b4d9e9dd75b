"""The `mistralai` SDK drives the simulator's Mistral batch API (`{simulator}/mistral/v1/...`): every answer is checked
against the SDK's types (its files and its batch jobs), the statuses are its seven, and the list pages by number."""

from __future__ import annotations

import re
from typing import Any

import httpx
import orjson
import pytest
from mistralai.client import Mistral
from mistralai.client.errors import SDKError
from mistralai.client.models import (
    BatchJob,
    CreateFileResponse,
    DeleteFileResponse,
    GetFileResponse,
    ListBatchJobsResponse,
)

from batch_scheduler.simulator.openai.mistral import HOST

from ..strict import problems
from .conftest import KEY

MODEL = "mistral-small-latest"
_ID = "[A-Za-z0-9_-]+"
STATUSES = {"QUEUED", "RUNNING", "SUCCESS", "FAILED", "TIMEOUT_EXCEEDED", "CANCELLATION_REQUESTED", "CANCELLED"}
ROUTES = [  # paths as served (under the host's stand-in)
    ("POST", "/v1/files", CreateFileResponse),
    ("GET", f"/v1/files/{_ID}", GetFileResponse),
    ("DELETE", f"/v1/files/{_ID}", DeleteFileResponse),
    ("GET", f"/v1/files/{_ID}/content", None),  # the lines as uploaded, or result lines (read by the test)
    ("POST", "/v1/batch/jobs", BatchJob),
    ("GET", "/v1/batch/jobs", ListBatchJobsResponse),
    ("GET", f"/v1/batch/jobs/{_ID}", BatchJob),
    ("POST", f"/v1/batch/jobs/{_ID}/cancel", BatchJob),
]


class MistralRecorder:
    """Every answer the client received, checked against its route's type (strict: no unknown field)."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str, int, Any]] = []

    async def hook(self, response: httpx.Response) -> None:
        await response.aread()
        path = response.request.url.path.removeprefix(HOST)
        self.seen.append((response.request.method, path, response.status_code, response.content))

    def problems(self) -> list[str]:
        found: list[str] = []
        for method, path, status, body in self.seen:
            kind = next((t for m, p, t in ROUTES if m == method and re.fullmatch(p, path)), "unknown")
            assert kind != "unknown", f"no SDK type for {method} {path}"
            if status < 400 and kind is not None:
                doc = orjson.loads(body)
                found += problems(kind, doc, complete=True, path=f"{method} {path}")
                for job in doc.get("data") or [doc] if kind in (BatchJob, ListBatchJobsResponse) else []:
                    found += [] if job["status"] in STATUSES else [f"{method} {path}: status {job['status']!r}"]
        return found


def lines(n: int) -> bytes:
    return b"".join(orjson.dumps({"custom_id": f"c{i}", "body": {"model": MODEL, "max_tokens": 20,
                                                                 "messages": [{"role": "user", "content": "q"}]}})
                    + b"\n" for i in range(n))


@pytest.fixture
def recorder() -> MistralRecorder:
    return MistralRecorder()


@pytest.fixture
async def client(sim, recorder):
    async with httpx.AsyncClient(event_hooks={"response": [recorder.hook]}, trust_env=False) as http:
        yield Mistral(api_key=KEY, server_url=sim.url + HOST, async_client=http)
    found = recorder.problems()
    assert recorder.seen and not found, "\n".join(found[:20])


async def upload(client, n: int = 3) -> str:
    uploaded = await client.files.upload_async(file={"file_name": "in.jsonl", "content": lines(n)}, purpose="batch")
    assert uploaded.purpose == "batch" and uploaded.sample_type == "batch_request"
    return uploaded.id


async def test_a_job_runs_from_upload_to_results_through_the_mistral_client(sim, client, clock):
    file_id = await upload(client)
    assert (await client.files.retrieve_async(file_id=file_id)).filename == "in.jsonl"
    job = await client.batch.jobs.create_async(input_files=[file_id], endpoint="/v1/chat/completions", model=MODEL,
                                               metadata={"batch_scheduler": "job-1-chunk-0"})
    assert job.status == "QUEUED" and job.metadata == {"batch_scheduler": "job-1-chunk-0"}
    clock.advance(5)
    assert (await client.batch.jobs.get_async(job_id=job.id)).status == "RUNNING"
    clock.advance(6)
    done = await client.batch.jobs.get_async(job_id=job.id)
    assert done.status == "SUCCESS" and done.total_requests == 3 and done.succeeded_requests == 3
    assert done.output_file is not None and done.error_file is None
    output = (await client.files.download_async(file_id=done.output_file)).read().splitlines()
    got = [orjson.loads(x) for x in output]
    assert sorted(x["custom_id"] for x in got) == ["c0", "c1", "c2"]
    assert {x["response"]["status_code"] for x in got} == {200}
    assert (await client.files.delete_async(file_id=file_id)).deleted
    assert sim.stats["calls"]["mistral.jobs.create"] == 1


async def test_a_cancelled_job_is_cancellation_requested_then_cancelled(sim, client, clock):
    sim.config.cancel_s = 2
    job = await client.batch.jobs.create_async(input_files=[await upload(client)], endpoint="/v1/chat/completions")
    clock.advance(2)
    assert (await client.batch.jobs.cancel_async(job_id=job.id)).status == "CANCELLATION_REQUESTED"
    clock.advance(3)
    assert (await client.batch.jobs.get_async(job_id=job.id)).status == "CANCELLED"


async def test_the_list_pages_by_number_newest_first_with_its_total(sim, client):
    file_id = await upload(client, 1)
    made = [(await client.batch.jobs.create_async(input_files=[file_id], endpoint="/v1/chat/completions")).id
            for _ in range(3)]
    first = await client.batch.jobs.list_async(page=0, page_size=2)
    assert [j.id for j in first.data or []] == made[:0:-1] and first.total == 3
    rest = await client.batch.jobs.list_async(page=1, page_size=2)
    assert [j.id for j in rest.data or []] == made[:1]


async def test_a_failed_job_says_why_in_its_errors(sim, client, clock):
    sim.config.mistral_max_requests = 2
    job = await client.batch.jobs.create_async(input_files=[await upload(client)], endpoint="/v1/chat/completions")
    clock.advance(11)
    failed = await client.batch.jobs.get_async(job_id=job.id)
    assert failed.status == "FAILED" and "at most 2 allowed" in failed.errors[0].message


async def test_inline_requests_are_refused_as_not_simulated(sim, client):
    with pytest.raises(SDKError, match="inline requests are not simulated"):
        await client.batch.jobs.create_async(endpoint="/v1/chat/completions", model=MODEL,
                                             requests=[{"custom_id": "a", "body": {"messages": []}}])


async def test_a_wrong_key_is_refused_with_401(sim, client):
    sim.config.valid_keys = {"other"}
    with pytest.raises(SDKError) as caught:
        await client.batch.jobs.list_async()
    assert caught.value.status_code == 401
